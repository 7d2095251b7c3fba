"""Bit-exact co-simulation of the RTL units against the integer golden model.

Every expected value comes from `sparsa.attention.fixedpoint` / `sparsa.attention.hdp` (the HDP golden
model); nothing of the algorithm is re-implemented here. Each unit has a vector generator (random plus
adversarial cases: extreme codes, saturated inputs, ties, all-pruned rows, pruned heads), a trace
builder (per-cycle port values), and the expected outputs at the cycles where the unit must produce
them. `cosim()` runs the trace on Amaranth's Python simulator or on Verilator and compares every
output bit for bit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from sparsa.errors import SparsaError
from sparsa.hw.rtl.params import load_params
from sparsa.hw.rtl.trace import run_amaranth
from sparsa.hw.rtl.unit_spec import Batch, UnitSpec

BACKENDS = ("amaranth", "verilator")


@dataclass
class CosimResult:
    unit: str
    backend: str
    vectors: int
    checked_outputs: int
    mismatches: int
    first_mismatch: dict | None
    kinds: dict[str, int]
    params: dict
    seconds: float

    @property
    def ok(self) -> bool:
        return self.mismatches == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "backend": self.backend,
            "vectors": self.vectors,
            "checked_outputs": self.checked_outputs,
            "mismatches": self.mismatches,
            "bit_exact": self.ok,
            "first_mismatch": self.first_mismatch,
            "kinds": self.kinds,
            "params": self.params,
            "seconds": round(self.seconds, 3),
        }


def compare(results: list[dict[str, int] | None], batch: Batch) -> tuple[int, int, dict | None]:
    """(outputs checked, mismatching outputs, first mismatch) between a run and the expectation.

    A cycle the unit must produce (strobe high) but did not counts as a mismatch of every port, and so
    does a strobe in a cycle where nothing was expected."""
    checked = bad = 0
    first = None
    for cyc, exp in batch.expect.items():
        got = results[cyc] if cyc < len(results) else None
        for port, val in exp.items():
            checked += 1
            g = None if got is None else got.get(port)
            if g != val:
                bad += 1
                if first is None:
                    first = {"cycle": cyc, "port": port, "expected": val, "got": g}
    return checked, bad, first


# -- registry -------------------------------------------------------------------------------


def unit_specs() -> dict[str, UnitSpec]:
    from sparsa.hw.rtl import units

    return units.UNITS


def get_unit(name: str) -> UnitSpec:
    specs = unit_specs()
    if name not in specs:
        raise SparsaError(f"unknown RTL unit {name!r}", hint=f"choose one of {', '.join(specs)}")
    return specs[name]


def cosim(
    unit: str,
    vectors: int = 500,
    *,
    preset: str | None = None,
    backend: str = "amaranth",
    seed: int = 0,
    mutate: dict | None = None,
    chunk: int = 2000,
    **overrides: Any,
) -> CosimResult:
    """Drive `vectors` vectors through `unit` and compare every output with the golden model.

    mutate: constructor flags that make the RTL deviate from the reference on purpose (e.g.
    {"split": "trunc"} or {"rounding": "nearest"}); used to show that the comparison catches a
    one-bit difference. chunk: vectors per simulation run (long traces are split to bound memory).
    """
    if backend not in BACKENDS:
        raise SparsaError(f"unknown cosim backend {backend!r}", hint=f"choose one of {', '.join(BACKENDS)}")
    if vectors < 1:
        raise SparsaError(f"vectors={vectors} must be at least 1")
    spec = get_unit(unit)
    merged = dict(spec.default_overrides)
    merged.update({k: v for k, v in overrides.items() if v is not None})
    params = load_params(preset or spec.default_preset, **merged)
    gen = torch.Generator().manual_seed(seed)
    # the golden model runs on tiny tensors here: extra intra-op threads only add overhead (and on a
    # busy machine, much more than that)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _cosim(spec, unit, vectors, params, backend, gen, mutate, chunk)
    finally:
        torch.set_num_threads(prev_threads)


def _cosim(spec, unit, vectors, params, backend, gen, mutate, chunk) -> CosimResult:
    t0 = time.perf_counter()
    checked = bad = done = 0
    first = None
    kinds: dict[str, int] = {}
    rtl = spec.build(params, **(mutate or {}))
    while done < vectors:
        n = min(chunk, vectors - done)
        batch = spec.make_batch(params, gen, n)
        if backend == "amaranth":
            results = run_amaranth(rtl, batch.trace, strobe=spec.strobe)
        else:
            from sparsa.hw.rtl.verilator import run_verilator

            results = run_verilator(rtl, batch.trace, name=f"sparsa_{unit}", strobe=spec.strobe)
        c, b, f = compare(results, batch)
        # a strobe where nothing is expected is a mismatch too (e.g. a spurious out_valid)
        if spec.strobe is not None:
            for cyc, r in enumerate(results):
                if r is not None and cyc not in batch.expect:
                    b += 1
                    f = f or {"cycle": cyc, "port": spec.strobe, "expected": 0, "got": 1}
        checked += c
        bad += b
        first = first or f
        done += batch.vectors
        for k, v in batch.kinds.items():
            kinds[k] = kinds.get(k, 0) + v
    return CosimResult(
        unit=unit,
        backend=backend,
        vectors=done,
        checked_outputs=checked,
        mismatches=bad,
        first_mismatch=first,
        kinds=kinds,
        params=params.to_dict(),
        seconds=time.perf_counter() - t0,
    )
