"""HDP attention (docs/algorithms.md §5.1) as an integer golden model, and its pieces.

Shapes: q, k, v are `[B, H, N, D_h]` float (before the 1/√D_h scale); `valid` is `[B, N]` bool
(True = a real token; padding keys/queries are excluded from every statistic and masked out).
All integer tensors are `torch.int64`. Everything is pure and deterministic: the same inputs give
bit-identical outputs whatever the batch split (no cross-batch or cross-head reduction anywhere).

Per head, in order (the RTL implements exactly these integer steps; the float formulas in docs/algorithms.md
are documentation):

1. `qQ = to_fixed(Q, f, n)`, `qK = to_fixed(K, f, n)`                      (round half even, saturate)
2. `I_Q, F_Q = split_int_frac(qQ, f, split)`, same for K                   (docs/algorithms.md §1.2)
3. `A = I_Q · I_Kᵀ`                                                        (exact integer)
4. pad N up to a multiple of the block size b with invalid rows/columns
5. `θ = block_importance(A, b, valid_elem, variant)`                      (see its docstring)
6. `θ_H = Σ |A|` over valid elements; `head_keep(θ_H, τ, n_valid, mode)`
7. `M = row_keep_mask(θ, valid_block, ρq)`                                 (bit-exact row rule)
8. `T = 2^f·A + F_Q·I_Kᵀ + I_Q·F_Kᵀ` at `fT = f` fractional bits (`approx=True`), or
   `T = qQ·qKᵀ` at `fT = 2f` (`approx=False`)                            (`approx_scores_int`)
9. `x = (T · C) >> (fT + 16 − S)` with `C = round(2^16 / √D_h)`: the scaled score in Q·.S
10. `P = int_softmax(x, M_elem)` (see `int_softmax`), `P` in Q0.`prob_bits`
11. `O = sat((P · qV) >> prob_bits)` with `qV = to_fixed(V, v_frac, v_total)`; pruned heads → 0.
    With `pruned="mean"` steps 10–11 are `int_softmax_mean`: pruned pairs keep their integer-part
    softmax weight, which multiplies the row's mean value vector.
Pairs masked by an additive bias ≤ MASK_BIAS (Swin's shift mask) are not attendable: like padding.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch

from sparsa.attention import fixedpoint as fx
from sparsa.attention import hdp_fast
# softmax constants: one home beside the fixed-point helpers, shared with the numba row softmax
from sparsa.attention.fixedpoint import EXP_A, EXP_B, EXP_C, RECIP_MAGIC, SCALE_BITS  # noqa: F401
from sparsa.attention.hdp_masks import (  # noqa: F401  (re-exported: hdp.X is the public name)
    IMPORTANCE_VARIANTS, TAU_MODES, HDPStats, _blockify, _valid_mask, block_importance, expand_block_mask, head_importance,
    head_keep, pad_to_block, row_keep_mask, row_keep_mask_gap, rowmax_gap_mask,
)
from sparsa.errors import SparsaError

THRESHOLD_RULES = ("rho", "gap")
PRUNED_MODES = ("drop", "mean")
# an additive score term at or below this is a *mask*, not a position bias: Swin's shifted-window
# mask is −100 (HF), relative position biases are O(1–10). Such (query, key) pairs are structurally
# excluded ("not attendable"): never kept, never counted as valid or pruned, out of every row statistic.
MASK_BIAS = -50.0



@dataclass(frozen=True)
class HDPConfig:
    """Everything that decides HDP's integer result. Checked on construction.

    frac_bits/total_bits: Q/K format Qm.f (default Q3.4, 8 bits). block: block side b.
    rho_b ∈ [−1, 1]: row ratio (stored as ρq = round(256·ρ_B)). tau_h: head threshold (None = never
    prune heads); tau_mode "abs" compares θ_H ≥ τ_H (integer), "mean" compares θ_H/N_valid² ≥ τ_H
    (as 256·θ_H ≥ round(256·τ_H)·N_valid²). importance: "abs" (seed, Σ|A|), "signed" (ΣA), "max"
    (max A), "rowmax" (per-query-row max + gap, see `rowmax_gap_mask`). threshold: "rho" (seed row rule) or "gap" (keep θ ≥ rowmax − gap·b², see
    `row_keep_mask_gap`). softmax: "int" (integer softmax) or "float" (exact softmax of the same
    integer scores; for accuracy ablations). v_mode: "fixed" (golden model) or "float" (P·V in float).
    pruned: "drop" (seed: softmax over the kept scores only) or "mean" (pruned keys keep their
    integer-part softmax weight, which goes to the row's mean value vector; see `attention_from_mask`).
    """

    frac_bits: int = 4
    total_bits: int = 8
    block: int = 2
    rho_b: float = 0.0
    tau_h: float | None = None
    tau_mode: str = "abs"
    split: str = "floor"
    approx: bool = True
    importance: str = "abs"
    threshold: str = "rho"
    gap: float = 8.0
    imp_bits: int = 0  # extra fractional bits the importance pass keeps (0 = seed: integer parts only)
    softmax: str = "int"
    newton_steps: int = 0
    score_bits: int = 12  # S: fractional bits of the scaled score x
    exp_bits: int = 15  # E: fractional bits of exp values
    recip_bits: int = 15  # M: fractional bits of the mantissa m and of 1/m
    prob_bits: int = 15  # fractional bits of P
    v_frac_bits: int = 8
    v_total_bits: int = 16
    v_mode: str = "fixed"
    pruned: str = "drop"

    def __post_init__(self):
        fx.check_format(self.frac_bits, self.total_bits)
        fx.check_format(self.v_frac_bits, self.v_total_bits)
        if not isinstance(self.block, int) or self.block < 1 or self.block > 256:
            raise SparsaError(f"block={self.block!r} must be an integer in [1, 256]", hint="HDP's hardware uses 2")
        if not -1.0 <= float(self.rho_b) <= 1.0:
            raise SparsaError(
                f"rho_b={self.rho_b} is out of range [-1, 1]",
                hint="-1 keeps every block, 0 prunes blocks below the row mean, 1 keeps only the row maximum",
            )
        if self.tau_h is not None and (not math.isfinite(float(self.tau_h)) or float(self.tau_h) < 0):
            raise SparsaError(f"tau_h={self.tau_h} must be a non-negative number", hint="omit it to keep every head")
        for name, val, allowed in (
            ("tau_mode", self.tau_mode, TAU_MODES),
            ("split", self.split, fx.SPLIT_MODES),
            ("importance", self.importance, IMPORTANCE_VARIANTS),
            ("threshold", self.threshold, THRESHOLD_RULES),
            ("softmax", self.softmax, ("int", "float")),
            ("v_mode", self.v_mode, ("fixed", "float")),
            ("pruned", self.pruned, PRUNED_MODES),
        ):
            if val not in allowed:
                raise SparsaError(f"{name}={val!r} is not supported", hint=f"use one of {allowed}")
        if self.newton_steps not in (0, 1, 2):
            raise SparsaError(f"newton_steps={self.newton_steps} must be 0, 1 or 2")
        if not 0 <= self.imp_bits <= self.frac_bits:
            raise SparsaError(f"imp_bits={self.imp_bits} must be in [0, frac_bits={self.frac_bits}]")
        if self.gap < 0:
            raise SparsaError(f"gap={self.gap} must be >= 0")
        if not (1 <= self.score_bits <= 16 + self.frac_bits and 8 <= self.exp_bits <= 20):
            raise SparsaError("score_bits must be in [1, 16+frac_bits] and exp_bits in [8, 20]")
        if not (8 <= self.recip_bits <= 20 and 8 <= self.prob_bits <= 20):
            raise SparsaError("recip_bits and prob_bits must be in [8, 20]")

    @property
    def rho_q(self) -> int:
        return int(round(256 * float(self.rho_b)))

    def to_dict(self) -> dict:
        return asdict(self)

    def with_(self, **kw) -> "HDPConfig":
        return replace(self, **kw)


# ---------------------------------------------------------------------------------------------
# integer pieces


def approx_scores_int(I_Q, F_Q, I_K, F_K, frac_bits: int, approx: bool = True, A_int=None) -> tuple[torch.Tensor, int]:
    """Integer scores for kept blocks (docs/algorithms.md §5.1 step 8); returns (T, fT), value T · 2^-fT.

    approx=True:  T = 2^f·A + F_Q·I_Kᵀ + I_Q·F_Kᵀ, fT = f (F_Q·F_Kᵀ dropped; under the floor split the
                  dropped term 2^-2f·F_Q·F_Kᵀ lies in [0, D_h·(1 − 2^-f)²]).
    approx=False: T = (I_Q·2^f + F_Q)·(I_K·2^f + F_K)ᵀ = qQ·qKᵀ, fT = 2f (exact product).
    """
    kt = lambda t: t.transpose(-1, -2)  # noqa: E731
    if A_int is None:
        A_int = fx.int_matmul(I_Q, kt(I_K))
    if approx:
        t = (A_int << frac_bits) + fx.int_matmul(F_Q, kt(I_K)) + fx.int_matmul(I_Q, kt(F_K))
        return t, frac_bits
    qq = (I_Q << frac_bits) + F_Q
    qk = (I_K << frac_bits) + F_K
    return fx.int_matmul(qq, kt(qk)), 2 * frac_bits


def scale_scores_int(T: torch.Tensor, t_frac: int, head_dim: int, score_bits: int) -> torch.Tensor:
    """x = (T · C) >> (t_frac + 16 − S), C = round(2^16/√D_h): the scaled score S̃ in Q·.S (floor)."""
    c = int(round(2**SCALE_BITS / math.sqrt(head_dim)))
    return fx.ashr(T * c, t_frac + SCALE_BITS - score_bits)


def int_exp(z: torch.Tensor, score_bits: int = 12, exp_bits: int = 15) -> torch.Tensor:
    """Integer exp of z ≤ 0 given in Q·.S; returns exp(z) in Q·.E (int64). Exact steps:

      L2 = round(ln2·2^S); k = (−z) // L2 (floor, z ≤ 0); p = z + k·L2 ∈ (−L2, 0]
      pb = p + round(1.353·2^S)
      poly = ((round(0.3585·2^16) · pb · pb) >> (16 + 2S − E)) + round(0.344·2^E)
      e = poly >> k if k ≤ 30 else 0
    """
    S, E = score_bits, exp_bits
    l2 = int(round(math.log(2) * 2**S))
    b_q = int(round(EXP_B * 2**S))
    a_q = int(round(EXP_A * 2**16))
    c_q = int(round(EXP_C * 2**E))
    k = (-z) // l2
    p = z + k * l2
    pb = p + b_q
    poly = fx.ashr(a_q * pb * pb, 16 + 2 * S - E) + c_q
    return torch.where(k <= 30, poly >> k.clamp(max=62), 0)


def int_reciprocal(s: torch.Tensor, recip_bits: int = 15, newton_steps: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Reciprocal of positive integers s = m·2^L (m ∈ [1,2)): returns (y, L) with 1/s ≈ y·2^-(M+L).

      L = floor(log2 s); m_q = s << (M − L) (or >> (L − M), floor) ∈ [2^M, 2^(M+1))   (m in Q1.M)
      y = (((3 << M) − m_q) · 61681) >> 17                     (≈ (24 − 8m)/17 in Q0.M)
      newton step (×newton_steps): y = (y · ((2 << M) − ((m_q · y) >> M))) >> M
    Entries with s ≤ 0 give y = 0.
    """
    M = recip_bits
    pos = s > 0
    s1 = torch.where(pos, s, 1)
    L = fx.bit_length(s1)
    m_q = fx.ashr(s1, L - M)
    y = (((3 << M) - m_q) * RECIP_MAGIC) >> 17
    for _ in range(newton_steps):
        y = (y * ((2 << M) - ((m_q * y) >> M))) >> M
    return torch.where(pos, y, 0), L


def int_softmax(x: torch.Tensor, keep: torch.Tensor, cfg: HDPConfig) -> torch.Tensor:
    """Integer softmax over the last dim of x (Q·.S) restricted to `keep`; returns P in Q0.prob_bits.

      z = x − max_{kept} x (≤ 0); e = int_exp(z) on kept elements, 0 elsewhere
      Σ = Σ_j e_j;  (y, L) = int_reciprocal(Σ)
      P = (e · y) >> (M + L − prob_bits)     (arithmetic shift; left shift if negative)
    Rows with no kept element give P = 0.
    """
    low = torch.iinfo(torch.int64).min // 4
    mx = torch.where(keep, x, low).amax(-1, keepdim=True)
    z = torch.where(keep, x - mx, 0)
    e = torch.where(keep, int_exp(z, cfg.score_bits, cfg.exp_bits), 0)
    s = e.sum(-1, keepdim=True)
    y, L = int_reciprocal(s, cfg.recip_bits, cfg.newton_steps)
    return fx.ashr(e * y, cfg.recip_bits + L - cfg.prob_bits)


def int_softmax_kept(x: torch.Tensor, rows: torch.Tensor, n_rows: int, cfg: HDPConfig) -> torch.Tensor:
    """`int_softmax` on the kept elements only: x (Q·.S) and the row of each kept element, 1-D.

    The pruned elements contribute exactly 0 to every row sum, so this gives the same integers as
    the dense form at a fraction of the cost and memory when most scores are pruned."""
    mx = torch.zeros(n_rows, dtype=x.dtype, device=x.device).scatter_reduce_(0, rows, x, "amax", include_self=False)
    e = int_exp(x - mx[rows], cfg.score_bits, cfg.exp_bits)
    s = torch.zeros(n_rows, dtype=e.dtype, device=e.device).index_add_(0, rows, e)
    y, L = int_reciprocal(s, cfg.recip_bits, cfg.newton_steps)
    return fx.ashr(e * y[rows], (cfg.recip_bits + L - cfg.prob_bits)[rows])


def _kept_scores_int(IQ, FQ, IK, FK, A, cfg: HDPConfig, idx) -> tuple[torch.Tensor, int]:
    """`approx_scores_int(...)` at the flat indices `idx` only (int64 1-D, and its fT)."""
    kt = lambda t: t.transpose(-1, -2)  # noqa: E731
    if not cfg.approx:
        f = cfg.frac_bits
        return fx.int_matmul_at((IQ << f) + FQ, kt((IK << f) + FK), idx), 2 * f
    a = fx.int_matmul_at(IQ, kt(IK), idx) if A is None else A.reshape(-1)[idx]
    t = (a << cfg.frac_bits) + fx.int_matmul_at(FQ, kt(IK), idx) + fx.int_matmul_at(IQ, kt(FK), idx)
    return t, cfg.frac_bits


# ---------------------------------------------------------------------------------------------
# whole attention


def check_qkv(q, k, v):
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise SparsaError(
            f"q, k, v must be [B, H, N, D_h] with equal B, H, N: got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[2] == 0:
        raise SparsaError("empty sequence: need at least one token")


def attendable(bias, B: int, N: int):
    """[B,N,N] bool: (query, key) pairs not masked by an additive mask ≤ MASK_BIAS in any head
    (Swin's shifted-window mask); None when `bias` is None."""
    if bias is None:
        return None
    m = (bias > MASK_BIAS).expand(B, -1, N, N)
    return m.all(1)


def block_masks_int(q: torch.Tensor, k: torch.Tensor, cfg: HDPConfig, valid: torch.Tensor | None = None, bias_int=None,
                    attend: torch.Tensor | None = None):
    """The integer pass only (steps 1–7): returns dict of padded integer tensors and masks.

    bias_int (optional, int64 broadcastable to [B,H,Np,Np]): a static additive term in A units
    (e.g. Swin's relative position bias, round(bias·√D_h)) folded into the signed/max importance.
    attend (optional bool [B,N,N], see `attendable`): pairs that may attend at all; the others are
    treated like padding pairs (out of θ, the row statistics, θ_H and the valid-block count)."""
    B, H, N, D = q.shape
    b = cfg.block
    valid = _valid_mask(valid, B, N, q.device)
    qQ = fx.to_fixed(q, cfg.frac_bits, cfg.total_bits)
    qK = fx.to_fixed(k, cfg.frac_bits, cfg.total_bits)
    qQ, padded = pad_to_block(qQ, b)
    qK, _ = pad_to_block(qK, b)
    vpad, _ = pad_to_block(valid.unsqueeze(-1), b, dim=-2)
    vpad = vpad.squeeze(-1)
    Np = N + padded
    IQ, FQ = fx.split_int_frac(qQ, cfg.frac_bits, cfg.split)
    IK, FK = fx.split_int_frac(qK, cfg.frac_bits, cfg.split)
    A = fx.int_matmul(IQ, IK.transpose(-1, -2))
    if cfg.imp_bits:
        # importance pass on the top bits of the word: I' = split at (f − imp_bits), A' = I'_Q·I'_Kᵀ
        g = cfg.frac_bits - cfg.imp_bits
        iq2, _ = fx.split_int_frac(qQ, g, cfg.split)
        ik2, _ = fx.split_int_frac(qK, g, cfg.split)
        A_imp = fx.int_matmul(iq2, ik2.transpose(-1, -2))
    else:
        A_imp = A
    velem = (vpad[:, :, None] & vpad[:, None, :])[:, None]  # [B,1,Np,Np]
    if attend is not None:
        velem = velem & _pad_bias(attend, Np)[:, None]
    if bias_int is not None and cfg.importance != "abs":
        A_imp = A_imp + (bias_int << (2 * cfg.imp_bits))
    imp_A = A_imp
    theta = block_importance(imp_A, b, velem, cfg.importance)
    vblk = _blockify(velem[:, 0], b).any(-1)  # [B,NB,NB]: blocks with at least one valid pair
    if cfg.importance == "rowmax":
        mask = rowmax_gap_mask(imp_A, velem, b, int(round(cfg.gap * 4**cfg.imp_bits)))
    elif cfg.threshold == "rho":
        mask = row_keep_mask(theta, vblk[:, None], cfg.rho_q)
    else:
        # gap is given in units of the raw score Q·K (A units at imp_bits = 0)
        scale = (b * b if cfg.importance != "max" else 1) * 4**cfg.imp_bits
        mask = row_keep_mask_gap(theta, vblk[:, None], int(round(cfg.gap * scale)))
    th = head_importance(A_imp, velem)
    n_valid = valid.sum(-1)
    hmask = head_keep(th, cfg.tau_h, n_valid[:, None], cfg.tau_mode)
    return dict(
        qQ=qQ, qK=qK, IQ=IQ, FQ=FQ, IK=IK, FK=FK, A=A, velem=velem, vpad=vpad, vblk=vblk, theta=theta,
        block_mask=mask, head_importance=th, head_mask=hmask, padded=padded, Np=Np, n_valid=n_valid,
    )


# below this fraction of kept scores the softmax runs on the kept elements only (gathered): faster
# than the dense form there, slower when nearly everything is kept (same integers either way)
SPARSE_FRACTION = 0.25


def attention_from_mask(q, k, v, keep_elem, head_mask, cfg: HDPConfig, ints=None, bias=None, velem=None):
    """Steps 8–11 given the kept elements `keep_elem` [B,H,Np,Np] (valid ∧ kept) and `head_mask`.

    `velem` (bool broadcastable to [B,H,Np,Np], default: every pair) = the valid, attendable pairs;
    `cfg.pruned="mean"` needs it: there the pruned pairs of a row keep the softmax weight of their
    integer-part score and that weight multiplies the row's mean value vector (see `int_softmax_mean`).
    Returns (output float [B,H,N,D_h], output_int or None, ops dict). Used by HDP and by every
    baseline, so all methods share one arithmetic."""
    B, H, N, D = q.shape
    Np = keep_elem.shape[-1]
    if ints is None:
        pad = lambda t: torch.nn.functional.pad(t, (0, 0, 0, Np - N))  # noqa: E731
        IQ, FQ = fx.split_int_frac(pad(fx.to_fixed(q, cfg.frac_bits, cfg.total_bits)), cfg.frac_bits, cfg.split)
        IK, FK = fx.split_int_frac(pad(fx.to_fixed(k, cfg.frac_bits, cfg.total_bits)), cfg.frac_bits, cfg.split)
        A = None
    else:
        IQ, FQ, IK, FK, A = ints["IQ"], ints["FQ"], ints["IK"], ints["FK"], ints["A"]
    mean = cfg.pruned == "mean"
    keep = keep_elem & head_mask[:, :, None, None]
    att = None
    if mean:
        att = torch.ones_like(keep) if velem is None else velem.expand_as(keep).clone()
        att &= head_mask[:, :, None, None]
        keep = keep & att
        if A is None:
            A = fx.int_matmul(IQ, IK.transpose(-1, -2))
    pm = pm_int = None
    n_kept = int(keep.sum()) if cfg.softmax == "int" and not mean else None
    if n_kept is not None and n_kept <= SPARSE_FRACTION * keep.numel():
        # scores, exp and normalisation only where kept (the rest of P is 0): same integers, less work
        idx = keep.reshape(-1).nonzero().squeeze(1)
        t_k, t_frac = _kept_scores_int(IQ, FQ, IK, FK, A, cfg, idx)
        x_k = scale_scores_int(t_k, t_frac, D, cfg.score_bits)
        if bias is not None:
            xb = _pad_bias(fx.to_fixed(bias, cfg.score_bits, 32), Np)
            x_k = x_k + xb.expand(keep.shape).reshape(-1)[idx]
        p_k = int_softmax_kept(x_k, idx // Np, keep.numel() // Np, cfg)
        p_int = None
        if cfg.v_mode == "fixed":
            p_int = torch.zeros(keep.numel(), dtype=torch.int64, device=q.device).index_put_((idx,), p_k)
            p_int = p_int.reshape(keep.shape)
        p = torch.zeros(keep.numel(), dtype=torch.float64, device=q.device)
        p = p.index_put_((idx,), fx.from_fixed(p_k, cfg.prob_bits, torch.float64)).reshape(keep.shape)
    elif cfg.softmax == "int":
        T, t_frac = approx_scores_int(IQ, FQ, IK, FK, cfg.frac_bits, cfg.approx, A_int=A)
        xb = 0 if bias is None else _pad_bias(fx.to_fixed(bias, cfg.score_bits, 32), Np)
        x = scale_scores_int(T, t_frac, D, cfg.score_bits) + xb
        if mean:
            xc = scale_scores_int(A, 0, D, cfg.score_bits) + xb  # the integer-part score
            p_int, pm_int = int_softmax_mean(x, xc, keep, att, cfg)
            pm = fx.from_fixed(pm_int, cfg.prob_bits, torch.float64)[..., :N, :]
        else:
            p_int = int_softmax(x, keep, cfg)
        p = fx.from_fixed(p_int, cfg.prob_bits, torch.float64)
    else:
        T, t_frac = approx_scores_int(IQ, FQ, IK, FK, cfg.frac_bits, cfg.approx, A_int=A)
        sb = 0 if bias is None else _pad_bias(bias.to(torch.float64), Np)
        s = T.to(torch.float64) * 2.0**-t_frac / math.sqrt(D) + sb
        p_int = None
        if mean:
            sc = A.to(torch.float64) / math.sqrt(D) + sb
            mx = torch.where(keep, s, -math.inf).amax(-1, keepdim=True)
            mx = torch.where(keep.any(-1, keepdim=True), mx, torch.where(att, sc, -math.inf).amax(-1, keepdim=True))
            e = torch.where(keep, torch.exp(s - mx), torch.where(att, torch.exp((sc - mx).clamp(max=0)), 0.0))
            z = e.sum(-1, keepdim=True)
            z = torch.where(z > 0, z, 1.0)
            p = torch.where(keep, e, 0.0) / z
            pm = (torch.where(att & ~keep, e, 0.0).sum(-1, keepdim=True) / z)[..., :N, :]
        else:
            p = torch.softmax(s.masked_fill(~keep, float("-inf")), -1).nan_to_num(0.0)
    p = p[..., :N, :N]
    if mean:
        a = att[..., :N, :N]
        cnt = a.sum(-1, keepdim=True).clamp(min=1)
    out_int = None
    if cfg.v_mode == "fixed" and p_int is not None:
        qV = fx.to_fixed(v, cfg.v_frac_bits, cfg.v_total_bits)
        acc = fx.int_matmul(p_int[..., :N, :N], qV)
        if mean:  # v̄ = floor(Σ_attendable qV / n): one vector per head (per shift region in Swin)
            vbar = torch.div(fx.int_matmul(a.to(torch.int64), qV), cnt, rounding_mode="floor")
            acc = acc + pm_int[..., :N, :] * vbar
        out_int = fx.saturate(fx.ashr(acc, cfg.prob_bits), cfg.v_total_bits)
        out_int = torch.where(head_mask[:, :, None, None], out_int, 0)
        out = fx.from_fixed(out_int, cfg.v_frac_bits, v.dtype)
    else:
        out = torch.matmul(p.to(v.dtype), v)
        if mean:
            vbar = torch.matmul(a.to(v.dtype), v) / cnt.to(v.dtype)
            out = out + pm.to(v.dtype) * vbar
        out = torch.where(head_mask[:, :, None, None], out, torch.zeros((), dtype=v.dtype))
    # one count over every head (a per-head bool .sum() widens every element: seconds at 1,568 tokens)
    kept = int(torch.count_nonzero(keep[..., :N, :N]))
    ops = {
        "int_macs": 0,  # filled by the caller (depends on whether an integer pass ran)
        "frac_macs": 2 * D * kept,
        "softmax_elements": kept,
        "pv_macs": D * kept,
        "kept_elements": kept,
    }
    if mean:  # every attendable pair goes through exp; v̄ (N·D adds) and pm·v̄ (D MACs per row) per head
        ops["softmax_elements"] = int(att[..., :N, :N].sum())
        rows = att[..., :N, :N].any(-1).sum()
        ops["comp_macs"] = int(2 * D * rows)
    return out, out_int, ops


def int_softmax_mean(x, xc, keep, att, cfg: HDPConfig):
    """Integer softmax for `pruned="mean"`: returns (P [.., N, N], Pm [.., N, 1]) in Q0.prob_bits.

    x: full scores (Q·.S) used on kept pairs; xc: integer-part scores (A only, Q·.S) used on the
    attendable pairs that were pruned. Exact steps (m = max of x over the kept pairs of the row, or
    of xc when the row kept nothing):
      z = x − m on kept pairs, min(xc − m, 0) on pruned attendable pairs; e = int_exp(z) there, 0 elsewhere
      Σ = Σ_j e_j; (y, L) = int_reciprocal(Σ)
      P = (e_kept · y) >> (M + L − prob_bits);  Pm = ((Σ_pruned e) · y) >> (M + L − prob_bits)
    and the output row is (P·qV + Pm·v̄) >> prob_bits with v̄ = floor(Σ_attendable qV / n_attendable)."""
    low = torch.iinfo(torch.int64).min // 4
    any_kept = keep.any(-1, keepdim=True)
    mx = torch.where(keep, x, low).amax(-1, keepdim=True)
    mx = torch.where(any_kept, mx, torch.where(att, xc, low).amax(-1, keepdim=True))
    z = torch.where(keep, x - mx, torch.where(att, (xc - mx).clamp(max=0), 0))
    e = torch.where(att, int_exp(z, cfg.score_bits, cfg.exp_bits), 0)
    y, L = int_reciprocal(e.sum(-1, keepdim=True), cfg.recip_bits, cfg.newton_steps)
    sh = cfg.recip_bits + L - cfg.prob_bits
    p = fx.ashr(torch.where(keep, e, 0) * y, sh)
    pm = fx.ashr(torch.where(att & ~keep, e, 0).sum(-1, keepdim=True) * y, sh)
    return p, pm


def _pad_bias(bias: torch.Tensor, Np: int) -> torch.Tensor:
    n = bias.shape[-1]
    if n == Np:
        return bias
    return torch.nn.functional.pad(bias, (0, Np - n, 0, Np - n))


# the same integers from exact float32 products and a fused row softmax (sparsa.attention.hdp_fast);
# False runs the plain int64 form below (the reference the fast form is tested against)
FAST_PATH = True
FAST_MIN_SCORES = 2**18  # below this the plain form costs little, and numba stays unloaded

# score elements one integer pass holds at once: above it heads are run in groups (every step is
# per head, so the result is the same), which bounds the int64 intermediates (~10 of 8 bytes each)
HEAD_CHUNK_SCORES = 2**22
# the long-sequence form holds ~25 bytes per score: larger groups, fewer calls (3 heads at 1,568 tokens)
FAST_HEAD_CHUNK_SCORES = 2**23


def _by_head_groups(q, k, v, cfg, valid, bias, chunk=None):
    """`hdp_attention_int` over groups of heads, the outputs and statistics joined as one call gives them."""
    B, H, N, _ = q.shape
    Np = N + (-N) % cfg.block
    step = max(1, (chunk or HEAD_CHUNK_SCORES) // (B * Np * Np))
    parts = []
    for h in range(0, H, step):
        hb = bias if bias is None or bias.dim() < 4 or bias.shape[1] == 1 else bias[:, h : h + step]
        parts.append(hdp_attention_int(q[:, h : h + step], k[:, h : h + step], v[:, h : h + step], cfg, valid, hb))
    sts = [p[1] for p in parts]
    cat = lambda name: None if getattr(sts[0], name) is None else torch.cat([getattr(t, name) for t in sts], 1)  # noqa: E731
    ops = {key: sum(t.ops[key] for t in sts) for key in sts[0].ops}  # every count is a sum over heads
    st0 = sts[0]
    block_mask = cat("block_mask")
    # 1x1 blocks with every head kept: the element mask is the block mask itself, joined once
    same = all(t.elem_keep is t.block_mask for t in sts)
    stats = HDPStats(block_mask=block_mask, head_mask=cat("head_mask"), valid_blocks=st0.valid_blocks,
                     valid_len=st0.valid_len, block_size=st0.block_size, seq_len=st0.seq_len, padded=st0.padded,
                     head_importance=cat("head_importance"), ops=ops, output_int=cat("output_int"),
                     elem_keep=block_mask if same else cat("elem_keep"))
    return torch.cat([p[0] for p in parts], 1), stats


def hdp_attention_int(q, k, v, cfg: HDPConfig | None = None, valid: torch.Tensor | None = None, bias=None):
    """HDP attention, integer golden model. Returns (output [B,H,N,D_h] float, HDPStats).

    output is exactly `stats.output_int · 2^-v_frac_bits` when v_mode="fixed" (the golden
    integer result), else P·V in float. Pruned heads output exactly 0. `bias` (optional float,
    broadcastable to [B,H,N,N]) is an additive score term (Swin's relative position bias / shift
    mask), quantized to Q·.S and added to x; it is folded (in A units) into signed/max importance.
    Pairs whose bias is ≤ MASK_BIAS (Swin's −100 shift mask) are not attendable: see `attendable`.
    """
    cfg = cfg or HDPConfig()
    check_qkv(q, k, v)
    B, H, N, D = q.shape
    scores = B * H * (N + (-N) % cfg.block) ** 2
    fast = FAST_PATH and B * H * N * N >= FAST_MIN_SCORES and hdp_fast.eligible(cfg, bias)
    if H > 1 and scores > (FAST_HEAD_CHUNK_SCORES if fast else HEAD_CHUNK_SCORES):
        return _by_head_groups(q, k, v, cfg, valid, bias, FAST_HEAD_CHUNK_SCORES if fast else None)
    if fast:
        res = hdp_fast.run(q, k, v, cfg, valid)
        if res is not None:
            return res
        if H > 1 and scores > HEAD_CHUNK_SCORES:  # declined: the int64 form, in its own smaller groups
            return _by_head_groups(q, k, v, cfg, valid, bias)
    bias_int = None
    if bias is not None and cfg.importance != "abs":
        bias_int = _pad_bias(torch.round(bias.to(torch.float64) * math.sqrt(D)).clamp(-(2**40), 2**40).to(torch.int64), N + (-N) % cfg.block)
    ints = block_masks_int(q, k, cfg, valid, bias_int, attendable(bias, B, N))
    keep_elem = expand_block_mask(ints["block_mask"], cfg.block) & ints["velem"]
    out, out_int, ops = attention_from_mask(q, k, v, keep_elem, ints["head_mask"], cfg, ints, bias, ints["velem"])
    nv = ints["n_valid"].to(torch.int64)
    ops["int_macs"] = int((nv**2).sum()) * H * D
    ops["dense_macs"] = 2 * int((nv**2).sum()) * H * D
    ops["valid_elements"] = int(torch.count_nonzero(ints["velem"])) * H  # attendable valid pairs (Swin's shift mask excluded)
    stats = HDPStats(
        block_mask=ints["block_mask"],
        head_mask=ints["head_mask"],
        valid_blocks=ints["vblk"],
        valid_len=ints["n_valid"],
        block_size=cfg.block,
        seq_len=N,
        padded=ints["padded"],
        head_importance=ints["head_importance"],
        ops=ops,
        output_int=out_int,
        elem_keep=keep_elem & ints["head_mask"][:, :, None, None],
    )
    return out, stats
