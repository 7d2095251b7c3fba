"""The unit registry: how to build each RTL unit and how to make its co-simulation vectors.

Expected values are computed only by the golden model (`sparsa.attention.fixedpoint`/`hdp`).
"""

from __future__ import annotations

import torch

from sparsa.attention import fixedpoint as fx
from sparsa.attention import hdp
from sparsa.errors import SparsaError
from sparsa.hw.rtl.cosim import Batch, UnitSpec
from sparsa.hw.rtl.params import RtlParams
from sparsa.hw.rtl.vectors import CODE_KINDS, codes, rand, randint


# -- PE and PE array --------------------------------------------------------------------------


def golden_tile(qQ: torch.Tensor, qK: torch.Tensor, p: RtlParams, approx: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Accumulators and 2x2 block importances of one output tile, from the golden model.

    qQ [R, L], qK [C, L] codes. Integer pass: A = I_Q I_K^T; approximation pass: T (spec §4.1 step 8)."""
    IQ, FQ = fx.split_int_frac(qQ, p.frac_bits, p.split)
    IK, FK = fx.split_int_frac(qK, p.frac_bits, p.split)
    A = fx.int_matmul(IQ, IK.T)
    acc = hdp.approx_scores_int(IQ, FQ, IK, FK, p.frac_bits, approx=True, A_int=A)[0] if approx else A
    imp = hdp.block_importance(acc, p.block, torch.ones_like(acc, dtype=torch.bool), "abs")
    return acc, imp


def _tile_batch(p: RtlParams, gen: torch.Generator, n: int, rows: int, cols: int, array: bool) -> Batch:
    """n dot-product tiles of 2*rows Q rows by 2*cols K rows, back to back with random bubbles."""
    R, C = 2 * rows, 2 * cols
    trace: list[dict[str, int]] = []
    expect: dict[int, dict[str, int]] = {}
    kinds: dict[str, int] = {}
    qn = (lambda r: f"q_{r}") if array else (lambda r: f"q{r}")
    kn = (lambda c: f"k_{c}") if array else (lambda c: f"k{c}")
    lo, hi = fx.qmin(p.total_bits), fx.qmax(p.total_bits)
    for v in range(n):
        kind = CODE_KINDS[v % len(CODE_KINDS)]
        mode = (v // len(CODE_KINDS)) % 2
        # mostly the full D_h; every 4th vector a shorter dot product (first/last handling)
        length = p.head_dim if v % 4 else randint(gen, 1, p.head_dim)
        qQ = codes(p, gen, (R, length), kind)
        qK = codes(p, gen, (C, length), kind)
        for k in range(length):
            if rand(gen) < 0.1:  # a bubble: garbage on the data ports and flags, valid low
                bubble = {"valid": 0, "first": randint(gen, 0, 1), "last": randint(gen, 0, 1)}
                bubble.update({qn(r): randint(gen, lo, hi) for r in range(R)})
                trace.append(bubble)
            cyc = {"valid": 1, "first": int(k == 0), "last": int(k == length - 1), "mode": mode}
            cyc.update({qn(r): int(qQ[r, k]) for r in range(R)})
            cyc.update({kn(c): int(qK[c, k]) for c in range(C)})
            trace.append(cyc)
        acc, imp = golden_tile(qQ, qK, p, approx=bool(mode))
        if array:
            exp = {f"acc_{r}_{c}": int(acc[r, c]) for r in range(R) for c in range(C)}
            exp.update({f"imp_{i}_{j}": int(imp[i, j]) for i in range(rows) for j in range(cols)})
        else:
            exp = {f"acc{r}{c}": int(acc[r, c]) for r in range(2) for c in range(2)}
            exp["importance"] = int(imp[0, 0])
        exp["out_valid"] = 1
        expect[len(trace) - 1] = exp
        key = f"{kind}/{'approx' if mode else 'int'}"
        kinds[key] = kinds.get(key, 0) + 1
    return Batch(trace, expect, n, kinds)


def _build_pe(p: RtlParams, split: str | None = None):
    from sparsa.hw.rtl.pe import PE

    return PE(p, split=split)


def _build_pe_array(p: RtlParams, split: str | None = None):
    from sparsa.hw.rtl.pe_array import PEArray

    return PEArray(p, split=split)


def _pe_batch(p, gen, n):
    return _tile_batch(p, gen, n, 1, 1, array=False)


def _pe_array_batch(p, gen, n):
    return _tile_batch(p, gen, n, p.pe_rows, p.pe_cols, array=True)


UNITS: dict[str, UnitSpec] = {}


def register(spec: UnitSpec) -> None:
    UNITS[spec.name] = spec


register(
    UnitSpec(
        "pe",
        "integer MAC PE, one 2x2 output block, int/frac approximation path, block importance",
        _build_pe,
        _pe_batch,
        strobe="out_valid",
        default_overrides={"head_dim": 8},
    )
)
register(
    UnitSpec(
        "pe_array",
        "rows x cols output-stationary PE array (broadcast Q rows / K rows)",
        _build_pe_array,
        _pe_array_batch,
        strobe="out_valid",
        default_overrides={"head_dim": 8},
    )
)
