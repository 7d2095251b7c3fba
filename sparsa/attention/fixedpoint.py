"""Signed fixed point (docs/algorithms.md §1.1–1.2): the integer arithmetic the HDP golden model and the RTL share.

Every function here is pure, vectorised over `torch.int64` tensors and deterministic. Integer codes
are always `torch.int64`; a Qm.f word has `total_bits = 1 + m + f` bits in two's complement and the
value `q · 2^-f`.

Exact semantics (what hardware must reproduce bit for bit):

* float → fixed (`to_fixed`): `q = clamp(round_half_even(x · 2^f), -2^(n-1), 2^(n-1) - 1)`.
  The multiplication by `2^f` is done in float64, where it is exact.
* arithmetic right shift (`ashr`): `floor(v / 2^s)` (what `>>` does on two's complement).
  A negative shift is a left shift (`v · 2^-s`).
* saturation (`saturate`): clamp to `[-2^(n-1), 2^(n-1) - 1]`.
* int/frac split (`split_int_frac`), mode `"floor"` (default, docs/algorithms.md §1.2): `I = q >> f`,
  `F = q & (2^f - 1)` ∈ [0, 2^f); mode `"trunc"`: `I = sign(q)·(|q| >> f)`, `F = q - I·2^f`
  (F carries the sign of q); mode `"round"`: `I = (q + 2^(f-1)) >> f`, `F = q - I·2^f` ∈ [-2^(f-1), 2^(f-1)).
  All give `q == I·2^f + F` exactly.
"""

from __future__ import annotations

import torch

from sparsa.errors import SparsaError

# HDP softmax constants (docs/algorithms.md §5.1 step 10, I-BERT polynomial, linear reciprocal); one home for
# the int64 form (sparsa.attention.hdp) and the numba row softmax (sparsa.attention.hdp_rows)
EXP_A, EXP_B, EXP_C = 0.3585, 1.353, 0.344
SCALE_BITS = 16  # C = round(2^16/√D_h)
RECIP_MAGIC = 61681  # round(2^20/17): (num·61681) >> 17 ≈ 8·num/17

SPLIT_MODES = ("floor", "trunc", "round")


def check_format(frac_bits: int, total_bits: int) -> None:
    """Validate a Qm.f format: 0 ≤ f, f + 1 ≤ total ≤ 32 (products must stay exact in int64)."""
    if not (isinstance(frac_bits, int) and isinstance(total_bits, int)):
        raise SparsaError(f"fixed-point bits must be integers, got frac_bits={frac_bits!r}, total_bits={total_bits!r}")
    if frac_bits < 0 or total_bits < frac_bits + 1 or total_bits > 32:
        raise SparsaError(
            f"invalid fixed-point format: frac_bits={frac_bits}, total_bits={total_bits}",
            hint="need 0 <= frac_bits and frac_bits + 1 <= total_bits <= 32 (1 sign bit, m integer bits, f fractional bits)",
        )


def qmin(total_bits: int) -> int:
    return -(1 << (total_bits - 1))


def qmax(total_bits: int) -> int:
    return (1 << (total_bits - 1)) - 1


def saturate(v: torch.Tensor, total_bits: int) -> torch.Tensor:
    """Clamp integer codes to the signed `total_bits` range."""
    return v.clamp(qmin(total_bits), qmax(total_bits))


def to_fixed(x: torch.Tensor, frac_bits: int, total_bits: int) -> torch.Tensor:
    """Float → Qm.f integer codes: round half to even, then saturate. Returns int64."""
    check_format(frac_bits, total_bits)
    scaled = torch.round(x.detach().to(torch.float64) * float(2**frac_bits))
    return saturate(scaled, total_bits).to(torch.int64)


def from_fixed(q: torch.Tensor, frac_bits: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Integer codes → float value `q · 2^-f` (exact in float64)."""
    return (q.to(torch.float64) * 2.0**-frac_bits).to(dtype)


def ashr(v: torch.Tensor, shift: int | torch.Tensor) -> torch.Tensor:
    """Arithmetic shift right: `floor(v / 2^shift)`; a negative shift shifts left.

    `shift` may be a tensor (per-element shift, as in the softmax normalisation)."""
    if isinstance(shift, int):
        return v >> shift if shift >= 0 else v << (-shift)
    shift = shift.to(torch.int64)
    right = v >> shift.clamp(min=0)
    left = v << (-shift).clamp(min=0)
    return torch.where(shift >= 0, right, left)


def split_int_frac(q: torch.Tensor, frac_bits: int, mode: str = "floor") -> tuple[torch.Tensor, torch.Tensor]:
    """Split Qm.f codes into integer part I and fractional part F with `q == I·2^f + F`.

    floor (default): I = q >> f (= floor(x̂)), F = q & (2^f − 1) ∈ [0, 2^f).
    trunc: I = sign(q)·(|q| >> f) (toward zero), F = q − I·2^f ∈ (−2^f, 2^f), sign of q.
    round (sparsa variant): I = (q + 2^(f−1)) >> f (nearest, halves up), F = q − I·2^f ∈ [−2^(f−1), 2^(f−1)).
    """
    if mode == "floor":
        i = q >> frac_bits
        f = q & ((1 << frac_bits) - 1)
    elif mode == "trunc":
        i = torch.sign(q) * (q.abs() >> frac_bits)
        f = q - i * (1 << frac_bits)
    elif mode == "round":
        i = (q + ((1 << frac_bits) >> 1)) >> frac_bits
        f = q - (i << frac_bits)
    else:
        raise SparsaError(f"unknown split mode {mode!r}", hint=f"use one of {SPLIT_MODES}")
    return i, f


def sat_add(a: torch.Tensor, b: torch.Tensor, total_bits: int) -> torch.Tensor:
    """Saturating add of two same-format codes (the sum is formed exactly in int64, then clamped)."""
    return saturate(a + b, total_bits)


def sat_mul(a: torch.Tensor, b: torch.Tensor, frac_bits: int, total_bits: int) -> torch.Tensor:
    """Saturating multiply of two Qm.f codes back into Qm.f: `sat((a·b) >> f)` (floor shift)."""
    return saturate(ashr(a * b, frac_bits), total_bits)


def int_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact integer matrix product `a @ b` of int64 tensors, returned as int64.

    Computed with float32 (float64) BLAS, which is exact (and so order-independent and bit-identical)
    while every partial sum stays below 2^24 (2^53); that is checked from the operands' magnitudes, and the
    pure int64 product is used otherwise."""
    if a.numel() == 0 or b.numel() == 0:
        return torch.matmul(a, b)
    inner = a.shape[-1]
    bound = int(a.abs().max()) * int(b.abs().max()) * inner
    if bound < 2**24:  # small codes (Q3.4 parts): float32 is exact too, and twice as fast
        return torch.matmul(a.to(torch.float32), b.to(torch.float32)).to(torch.int64)
    if bound < 2**53:
        return torch.matmul(a.to(torch.float64), b.to(torch.float64)).to(torch.int64)
    return torch.matmul(a, b)


def int_matmul_at(a: torch.Tensor, b: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """`int_matmul(a, b).reshape(-1)[idx]`: the product's entries at flat indices `idx`, as int64,
    without widening the whole product (the exact float result is gathered, then converted)."""
    if a.numel() == 0 or b.numel() == 0:
        return int_matmul(a, b).reshape(-1)[idx]
    bound = int(a.abs().max()) * int(b.abs().max()) * a.shape[-1]
    if bound >= 2**53:
        return torch.matmul(a, b).reshape(-1)[idx]
    dt = torch.float32 if bound < 2**24 else torch.float64
    return torch.matmul(a.to(dt), b.to(dt)).reshape(-1)[idx].to(torch.int64)


def bit_length(v: torch.Tensor) -> torch.Tensor:
    """floor(log2 v) for v ≥ 1 (int64, exact: counts the powers of two ≤ v); 0 for v ≤ 1."""
    out = torch.zeros_like(v)
    for b in range(1, 63):
        out += (v >= (1 << b)).to(torch.int64)
    return out
