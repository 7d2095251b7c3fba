"""Shared helpers for the co-simulation vector generators (random and adversarial operand codes)."""

from __future__ import annotations

import torch

from sparsa.attention import fixedpoint as fx
from sparsa.hw.rtl.params import RtlParams

# kinds of operand-code vectors, cycled so every batch holds all of them
CODE_KINDS = ("random", "extreme", "saturated", "small", "zero_mix")


def codes(p: RtlParams, gen: torch.Generator, shape: tuple[int, ...], kind: str) -> torch.Tensor:
    """int64 Qm.f codes of one kind:
    random: uniform over the whole code range; extreme: only qmin/qmax/0/±1 (largest products and
    sign corners); saturated: floats up to 4x beyond the range through the golden `to_fixed` (which
    clamps); small: |code| <= 2^f (where the floor and trunc splits differ); zero_mix: half zeros.
    """
    lo, hi = fx.qmin(p.total_bits), fx.qmax(p.total_bits)
    if kind == "random":
        return torch.randint(lo, hi + 1, shape, generator=gen)
    if kind == "extreme":
        pool = torch.tensor([lo, hi, lo + 1, hi - 1, 0, 1, -1])
        return pool[torch.randint(0, len(pool), shape, generator=gen)]
    if kind == "saturated":
        span = 2.0 ** (p.total_bits - 1 - p.frac_bits)
        x = (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * 4 * span
        return fx.to_fixed(x, p.frac_bits, p.total_bits)
    if kind == "small":
        r = 1 << p.frac_bits
        return torch.randint(-r, r + 1, shape, generator=gen).clamp(lo, hi)
    if kind == "zero_mix":
        c = torch.randint(lo, hi + 1, shape, generator=gen)
        return torch.where(torch.rand(shape, generator=gen) < 0.5, c, 0)
    raise ValueError(kind)


def randint(gen: torch.Generator, lo: int, hi: int) -> int:
    """One integer in [lo, hi]."""
    return int(torch.randint(lo, hi + 1, (1,), generator=gen))


def rand(gen: torch.Generator) -> float:
    return float(torch.rand((1,), generator=gen, dtype=torch.float64))
