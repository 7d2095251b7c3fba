"""Analytical error bounds of HDP's integer arithmetic versus dense float attention.

The exp and reciprocal approximations are bounded *by enumeration*: every integer input the
hardware can see is evaluated once (2^15–2^17 values), which is a proof for that configuration,
not an estimate. The rest of the chain (fixed-point Q/K/V, score scaling, shifts) is bounded
analytically from the operands' magnitudes.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from sparsa.attention import fixedpoint as fx
from sparsa.attention.hdp import SCALE_BITS, HDPConfig, int_exp, int_reciprocal


@lru_cache(maxsize=32)
def exp_error(score_bits: int, exp_bits: int) -> float:
    """Smallest ε with |ê − e^z| ≤ ε·e^z + 2^-E for every integer z ∈ [−31·ln2·2^S, 0] (exhaustive)."""
    l2 = int(round(math.log(2) * 2**score_bits))
    z = torch.arange(-31 * l2, 1, dtype=torch.int64)
    e_hat = int_exp(z, score_bits, exp_bits).to(torch.float64) * 2.0**-exp_bits
    e = torch.exp(z.to(torch.float64) * 2.0**-score_bits)
    excess = ((e_hat - e).abs() - 2.0**-exp_bits).clamp(min=0)
    # below z = −31·ln2 the integer exp is 0 and e^z < 2^-31 < 2^-E: covered by the absolute term
    return float((excess / e).max())


@lru_cache(maxsize=32)
def recip_error(recip_bits: int, newton_steps: int) -> float:
    """max |y·m − 1| over every mantissa m_q ∈ [2^M, 2^(M+1)) (exhaustive)."""
    M = recip_bits
    m_q = torch.arange(1 << M, 1 << (M + 1), dtype=torch.int64)
    y, L = int_reciprocal(m_q, M, newton_steps)
    assert bool((L == M).all())
    return float((y.to(torch.float64) * m_q.to(torch.float64) * 2.0 ** (-2 * M) - 1).abs().max())


def dense_error_bound(q, k, v, cfg: HDPConfig, valid=None) -> float:
    """Upper bound on max |O_hdp − O_dense| when nothing is pruned (every block kept, no head pruned).

    Holds for approx=False, v_mode="fixed", int softmax, and Q, K, V within their formats' ranges
    (no saturation). Terms: δ = 2^-(f+1) rounding of Q/K; logit error
    ε_L = max_ij (δ·Σ|q_i| + δ·Σ|k_j| + D·δ²)/√D + |S|max·2^-17·√D + 2^-S; softmax ratio e^{±2ε_L};
    exp ε_e and reciprocal ε_y by enumeration; floors of P (2^-P) and O (2^-fv); V rounding 2^-(fv+1).
    """
    B, H, N, D = q.shape
    d = 2.0 ** -(cfg.frac_bits + 1)
    qa = q.abs().sum(-1).to(torch.float64)  # [B,H,N]
    ka = k.abs().sum(-1).to(torch.float64)
    eps_s = float((d * (qa.amax(-1) + ka.amax(-1)) + D * d * d).max()) / math.sqrt(D)
    s_max = float((qa.amax(-1) * k.abs().amax((-1, -2)).to(torch.float64)).max()) / math.sqrt(D) + eps_s
    eps_scale = s_max * math.sqrt(D) * abs(round(2**SCALE_BITS / math.sqrt(D)) / 2**SCALE_BITS - 1 / math.sqrt(D))
    eps_L = eps_s + eps_scale + 2.0**-cfg.score_bits
    eps_e = exp_error(cfg.score_bits, cfg.exp_bits)
    eps_y = recip_error(cfg.recip_bits, cfg.newton_steps) + 2.0 ** -cfg.recip_bits
    a_e = 2.0**-cfg.exp_bits
    # Σ ≥ ê_max ≥ 1 − ε_e − 2^-E (the row maximum has z = 0, e = 1)
    lo = 1 - eps_e - a_e
    rel = math.exp(2 * eps_L) * (1 + eps_e) * (1 + eps_y) / (1 - eps_e - N * a_e / lo) - 1
    rel = max(rel, 1 - math.exp(-2 * eps_L) * (1 - eps_e) * (1 - eps_y) / (1 + eps_e + N * a_e / lo))
    abs_p = a_e * (1 + eps_y) / (lo * (1 - eps_e)) + 2.0**-cfg.prob_bits
    vmax = float(v.abs().max())
    dv = 2.0 ** -(cfg.v_frac_bits + 1)
    return vmax * (rel + N * abs_p) + (1 + rel + N * abs_p) * dv + 2.0**-cfg.v_frac_bits


def approx_error_bound(head_dim: int, frac_bits: int, split: str = "floor") -> tuple[int, int]:
    """Range of the dropped term F_Q·F_Kᵀ (in units of 2^-2f) per score element: [lo, hi]."""
    f1 = (1 << frac_bits) - 1
    if split == "floor":
        return 0, head_dim * f1 * f1
    if split == "round":
        h = 1 << (frac_bits - 1) if frac_bits else 0
        return -head_dim * h * (h - 1) if frac_bits else 0, head_dim * h * h
    return -head_dim * f1 * f1, head_dim * f1 * f1


__all__ = ["exp_error", "recip_error", "dense_error_bound", "approx_error_bound", "fx"]
