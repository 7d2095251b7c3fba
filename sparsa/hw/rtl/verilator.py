"""Verilator backend for `trace`: compile the unit's generated Verilog with a generic C++ harness.

The harness reads one line of input values per cycle on stdin (port order fixed by `port_list`), applies
them, clocks one rising edge and prints the outputs (only in cycles whose strobe output is 1, prefixed by
the cycle number). Builds are cached by a hash of the Verilog, so repeated runs skip the C++ compile.
"""

from __future__ import annotations

import hashlib
import re
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from amaranth.back import verilog
from amaranth.lib import wiring

from sparsa.errors import SparsaError
from sparsa.hw.rtl.trace import port_list

INSTALL_HINT = "install Verilator 5 (Debian: `apt-get install verilator`, or `make apt-deps` as root)"


def verilator_path() -> str | None:
    return shutil.which("verilator")


def _cache_dir() -> Path:
    root = Path(os.environ.get("SPARSA_CACHE", Path.home() / ".cache" / "sparsa")) / "verilator"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _harness(top: str, ins, outs, strobe: str | None, has_rst: bool = True) -> str:
    read = "\n".join(f"        top->{n} = (decltype(top->{n}))v[{i}];" for i, (n, *_rest) in enumerate(ins))
    strobe_test = f"if (!top->{strobe}) continue;" if strobe else ""
    prints = " ".join(f'printf(" %llx", (unsigned long long)top->{n});' for n, *_rest in outs)
    reset = (
        "top->clk = 0; top->rst = 1; top->eval(); top->clk = 1; top->eval(); top->clk = 0; top->rst = 0; top->eval();"
        if has_rst
        else "top->clk = 0; top->eval();"
    )
    return f"""
#include "V{top}.h"
#include "verilated.h"
#include <cstdio>
#include <vector>
int main(int argc, char** argv) {{
    VerilatedContext* ctx = new VerilatedContext;
    ctx->commandArgs(argc, argv);
    V{top}* top = new V{top}{{ctx}};
    const int nin = {len(ins)};
    std::vector<unsigned long long> v(nin > 0 ? nin : 1, 0);
    {reset}
    long cycle = 0;
    while (true) {{
        bool ok = true;
        for (int i = 0; i < nin; ++i) if (scanf("%llx", &v[i]) != 1) {{ ok = false; break; }}
        if (!ok) break;
{read}
        top->clk = 0; top->eval();
        top->clk = 1; top->eval();
        long c = cycle++;
        {strobe_test}
        printf("%ld", c);
        {prints}
        printf("\\n");
    }}
    top->final();
    delete top; delete ctx;
    return 0;
}}
"""


def build(unit: wiring.Component, name: str, strobe: str | None) -> tuple[Path, list, list]:
    """Compile (or reuse) the Verilator model of `unit`. Returns (binary, input ports, output ports)."""
    if verilator_path() is None:
        raise SparsaError("Verilator is not installed, so the Verilog co-simulation cannot run", hint=INSTALL_HINT)
    ports = port_list(unit)
    for n, w, *_ in ports:
        if w > 64:
            raise SparsaError(f"port {n} is {w} bits wide; the Verilator harness handles up to 64")
    ins = [p for p in ports if p[3]]
    outs = [p for p in ports if not p[3]]
    text = verilog.convert(unit, name=name, emit_src=False)
    header = re.search(rf"module {name}\(([^)]*)\)", text)
    has_rst = header is not None and "rst" in [x.strip() for x in header.group(1).split(",")]
    harness = _harness(name, ins, outs, strobe, has_rst)
    key = hashlib.sha256((text + harness).encode()).hexdigest()[:20]
    out_dir = _cache_dir() / f"{name}-{key}"
    binary = out_dir / f"V{name}"
    if not binary.exists():
        tmp = Path(tempfile.mkdtemp(dir=_cache_dir()))
        (tmp / f"{name}.v").write_text(text)
        (tmp / "harness.cpp").write_text(harness)
        cmd = [
            "verilator", "--cc", f"{name}.v", "--exe", "harness.cpp", "--build", "-O2", "-j", "2",
            "--top-module", name, "-Wno-fatal", "-Wno-lint", "-Wno-style", "--Mdir", "obj",
            # unoptimised C++: the models are small and run in well under a second, the compile dominates
            "-MAKEFLAGS", "OPT_FAST=-O0 OPT_SLOW=-O0 OPT_GLOBAL=-O0",
        ]
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SparsaError(f"Verilator failed to build {name}:\n{proc.stderr[-2000:]}", hint=INSTALL_HINT)
        (tmp / "obj" / f"V{name}").rename(tmp / f"V{name}")
        shutil.rmtree(tmp / "obj", ignore_errors=True)
        try:
            tmp.rename(out_dir)
        except OSError:  # another process built the same model meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
    return binary, ins, outs


def run_verilator(
    unit: wiring.Component,
    trace: list[dict[str, int]],
    name: str,
    strobe: str | None = None,
) -> list[dict[str, int] | None]:
    """Same protocol and return value as `trace.run_amaranth`."""
    binary, ins, outs = build(unit, name, strobe)
    state = {n: init for n, _w, _s, _i, init in ins}
    lines = []
    for cycle in trace:
        state.update(cycle)
        lines.append(" ".join(format(state[n] & ((1 << w) - 1), "x") for n, w, *_ in ins))
    proc = subprocess.run([str(binary)], input="\n".join(lines) + "\n", capture_output=True, text=True)
    if proc.returncode != 0:
        raise SparsaError(f"Verilator model of {name} failed: {proc.stderr[-1000:]}")
    results: list[dict[str, int] | None] = [None] * len(trace) if strobe else []
    for line in proc.stdout.splitlines():
        fields_ = line.split()
        cyc = int(fields_[0])
        row = {}
        for (n, w, s, *_), h in zip(outs, fields_[1:]):
            v = int(h, 16) & ((1 << w) - 1)
            if s and v >> (w - 1):
                v -= 1 << w
            row[n] = v
        if strobe:
            results[cyc] = row
        else:
            results.append(row)
    return results
