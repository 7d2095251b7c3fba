# sparsa: the two commands a new user runs are `make demo` and `make test`.
PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.sparsa-installed
# pytest exit 5 ("no tests collected") is not a failure of the code under test
PYTEST  := $(BIN)/python -m pytest

.PHONY: all install apt-deps demo test bench bench-deps fixtures clean

all: demo

$(STAMP): pyproject.toml
	@# the environment takes ~3 GB (torch, onnxruntime, ray, transformers): say so before pip fails halfway with ENOSPC
	@free=$$(df -Pk . | awk 'NR==2 {print $$4}'); if [ -n "$$free" ] && [ "$$free" -lt 3500000 ]; then \
	  echo "warning: $$((free / 1024)) MiB free here; installing sparsa's environment needs about 3 GB (free some disk if pip fails with 'No space left on device')"; fi
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel on disk (a looser spec pulls a multi-GB CUDA build)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,bench]'
	# build the C++ block-sparse attention kernel once (torch caches it); optional
	-$(BIN)/python -m sparsa.attention.kernels
	# compile the numba kernels of HDP's long-sequence form into their cache once (seconds at first use otherwise)
	-$(BIN)/python -m sparsa.attention.hdp_rows
	# build the offline distillation/calibration corpus once (cached in ~/.cache/sparsa)
	$(BIN)/python -c "from sparsa.data import load_dataset; load_dataset('corpus', split='calib')"
	-$(MAKE) --no-print-directory apt-deps
	touch $(STAMP)

install: $(STAMP)

# Optional system tools: Verilator/iverilog (RTL co-simulation through Verilog) and Chromium
# (report check in a real browser). Features that need them skip with a message when absent.
apt-deps:
	@if command -v verilator >/dev/null && command -v chromium >/dev/null; then \
	  echo "apt-deps: verilator and chromium present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq verilator iverilog chromium chromium-driver >/dev/null) \
	  || echo "apt-deps: could not install verilator/chromium; the tests that need them will skip"; \
	else \
	  echo "apt-deps: not root; install verilator iverilog chromium chromium-driver yourself to enable Verilog cosim and the browser check"; \
	fi

demo: $(STAMP)
	$(BIN)/sparsa run --overwrite

test: $(STAMP)
	$(PYTEST) tests; rc=$$?; if [ $$rc = 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

# SCALE-Sim 3.0.0 for bench/sim_vs_scalesim.py only, in its own venv (it crashes with numpy >= 2.4)
bench-deps:
	test -x .venv-scalesim/bin/python || $(PY) -m venv .venv-scalesim
	.venv-scalesim/bin/pip install -q scalesim==3.0.0 'numpy<2.4'

fixtures: $(STAMP)
	$(BIN)/python -m sparsa.fixtures.train all

bench: $(STAMP)
	for f in bench/*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
