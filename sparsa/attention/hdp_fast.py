"""`hdp_attention_int` for long sequences without the int64 score tensors: the same integers, less memory.

The plain form holds every head's scores as int64 through ~30 elementwise passes (at 1,568 tokens,
12 heads x 1,568² = 30 M scores a layer). Here the integer products that decide the masks and the
softmax are float32 BLAS products, which are *exact*: every operand is a small integer code and each
product's sum of absolute terms is checked below 2^24 (so every partial sum of any summation order is
an integer float32 represents exactly). The masks then come from float32 compares of those exact
integers and the softmax is the fused row kernel of `hdp_rows`. Scores take 4 bytes instead of ~80.

Covered: softmax="int", pruned="drop", no additive bias, imp_bits=0; `run` returns None otherwise (or
when a bound does not hold, or numba is missing) and the caller runs the plain form.
"""

from __future__ import annotations

import math
import threading

import torch

from sparsa.attention import fixedpoint as fx

EXACT_F32 = 2**24  # integers below this are exact in float32, and so is any sum of them that stays below it


def _exact_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor | None:
    """a @ bᵀ (int64 codes [..., N, K]) as float32, or None when a partial sum could reach 2^24."""
    bound = int(a.abs().amax()) * int(b.abs().amax()) * a.shape[-1] if a.numel() and b.numel() else 0
    if bound >= EXACT_F32:
        return None
    return torch.matmul(a.to(torch.float32), b.to(torch.float32).transpose(-1, -2))


# Some int8 GEMM kernels (AVX2, AVX-512 without VNNI) sum pairs of u8×s8 products in saturating int16
# after shifting one operand by +128; below this bound on |a|, |b| no pair can saturate whichever
# operand is shifted, so torch's int8 GEMM (int32 sums) is exact on every CPU.
PAIR_LIMIT = 2**15 - 1


# The int32 products' storage, kept per thread between calls: a fresh 10-30 MB tensor per head group is
# ~7,000 page faults each time (VideoMAE-B: ~0.7 M a run, seconds of kernel time). Nothing returned
# from `run` refers to it: A is consumed by the masks, C becomes T and then P, consumed by P·V.
_WORKSPACE = threading.local()


def _buffer(slot: str, shape: tuple[int, ...]) -> torch.Tensor:
    held = getattr(_WORKSPACE, slot, None)
    n = math.prod(shape)
    if held is None or held.numel() < n:
        held = torch.empty(n, dtype=torch.int32)
        setattr(_WORKSPACE, slot, held)
    return held[:n].view(shape)


def _int8_product(a: torch.Tensor, b: torch.Tensor, slot: str | None = None) -> torch.Tensor | None:
    """a @ bᵀ (int64 codes [..., N, K]) as int32 through torch's int8 GEMM (~4x a float32 product on
    AVX-512 VNNI), or None where it would not be exact or is unavailable (the float32 product runs)."""
    if not hasattr(torch, "_int_mm") or not a.numel() or not b.numel() or a.shape[:-2] != b.shape[:-2]:
        return None
    ma, mb, k = int(a.abs().amax()), int(b.abs().amax()), a.shape[-1]
    if 2 * max(ma * (mb + 128), (ma + 128) * mb) > PAIR_LIMIT or ma * mb * k >= 2**31:
        return None
    a8, b8 = a.to(torch.int8).reshape(-1, *a.shape[-2:]), b.to(torch.int8).reshape(-1, *b.shape[-2:])
    shape = (a8.shape[0], a8.shape[1], b8.shape[1])
    out = _buffer(slot, shape) if slot else torch.empty(shape, dtype=torch.int32)
    try:
        for i in range(a8.shape[0]):  # a 2-D GEMM per (input, head)
            torch._int_mm(a8[i], b8[i].t(), out=out[i])
    except RuntimeError:  # a build of torch without a CPU int8 GEMM
        return None
    return out.reshape(*a.shape[:-1], b.shape[-2])


def eligible(cfg, bias) -> bool:
    return bias is None and cfg.softmax == "int" and cfg.pruned == "drop" and cfg.imp_bits == 0


def run(q, k, v, cfg, valid):
    """(output, HDPStats) exactly as `hdp.hdp_attention_int(q, k, v, cfg, valid)` gives them, or None."""
    from sparsa.attention import hdp_masks as hm
    from sparsa.attention.hdp_rows import rowmax_keep, softmax_rows

    B, H, N, D = q.shape
    b = cfg.block
    valid = hm._valid_mask(valid, B, N, q.device)
    qQ, padded = hm.pad_to_block(fx.to_fixed(q, cfg.frac_bits, cfg.total_bits), b)
    qK, _ = hm.pad_to_block(fx.to_fixed(k, cfg.frac_bits, cfg.total_bits), b)
    vpad = hm.pad_to_block(valid.unsqueeze(-1), b, dim=-2)[0].squeeze(-1)
    IQ, FQ = fx.split_int_frac(qQ, cfg.frac_bits, cfg.split)
    IK, FK = fx.split_int_frac(qK, cfg.frac_bits, cfg.split)
    default_rule = cfg.importance == "rowmax" and b == 1  # one numba pass decides it (hdp_rows.rowmax_keep)
    A = _int8_product(IQ, IK, "A") if default_rule else None  # step 3: A = I_Q·I_Kᵀ
    A = _exact_product(IQ, IK) if A is None else A
    if A is None:
        return None
    all_valid = bool(vpad.all())
    velem = (vpad[:, :, None] & vpad[:, None, :])[:, None]  # [B,1,Np,Np]
    # step 5-7 on the exact integers (int32, or float32 holding them); invalid pairs are out of every statistic
    gap_int = int(round(cfg.gap))
    fused = rowmax_keep(A, vpad, gap_int) if default_rule else None
    A_int = None
    if fused is not None:  # sparsa's default rule in one numba pass (the same comparisons and sums)
        mask, th, kept_h, maxabs = fused
        if maxabs + gap_int >= EXACT_F32:
            return None
        A_int = A if A.dtype == torch.int32 else None  # kept for step 8's T = 2^f·A + ...
        del A
    elif A.dtype != torch.float32:  # numba unavailable: the torch rules below take float32 integers
        A = _exact_product(IQ, IK)
        if A is None:
            return None
    elif cfg.importance == "rowmax":
        if int(A.abs().amax()) + gap_int >= EXACT_F32:  # mx − gap must stay exact
            return None
        Av = A if all_valid else A.masked_fill(~velem, -torch.inf)
        q_ok = Av >= Av.amax(-1, keepdim=True) - gap_int  # a row with no valid pair: −inf ≥ −inf, masked below
        if not all_valid:
            q_ok &= velem
        del Av
        mask = q_ok if b == 1 else hm._blockify(q_ok, b).any(-1)
        del q_ok
    else:
        if int(A.abs().amax()) * b * b >= EXACT_F32:  # block sums must stay exact
            return None
        Am = A if all_valid else A.masked_fill(~velem, 0)
        src = Am.abs() if cfg.importance == "abs" else Am
        if cfg.importance in ("signed", "abs"):
            theta = hm._blockify(src, b).sum(-1).to(torch.int64)
        else:  # max over valid elements; a block with none gives 0
            low = -torch.inf
            mx = hm._blockify(A if all_valid else A.masked_fill(~velem, low), b).amax(-1)
            theta = torch.where(mx == low, 0, mx).to(torch.int64)
        del Am, src
        vblk_h = hm._blockify(velem[:, 0], b).any(-1)[:, None]
        if cfg.threshold == "rho":
            mask = hm.row_keep_mask(theta, vblk_h, cfg.rho_q)
        else:
            scale = b * b if cfg.importance != "max" else 1
            mask = hm.row_keep_mask_gap(theta, vblk_h, int(round(cfg.gap * scale)))
        del theta
    vblk = velem[:, 0] if b == 1 else hm._blockify(velem[:, 0], b).any(-1)
    if fused is None:  # step 6: θ_H = Σ|A| over valid pairs, summed in float64 (exact below 2^53)
        absA = A.abs_() if all_valid else A.abs_().masked_fill_(~velem, 0)
        th = absA.sum(-1, dtype=torch.float64).sum(-1).to(torch.int64)
        del A, absA
    n_valid = valid.sum(-1)
    hmask = hm.head_keep(th, cfg.tau_h, n_valid[:, None], cfg.tau_mode)
    keep_elem = hm.expand_block_mask(mask, b) if b > 1 else mask
    if not all_valid:
        keep_elem = keep_elem & velem
    keep = keep_elem if bool(hmask.all()) else keep_elem & hmask[:, :, None, None]
    # step 8: T = 2^f·A + F_Q·I_Kᵀ + I_Q·F_Kᵀ as one product [2^f·I_Q + F_Q, I_Q]·[I_K, F_K]ᵀ (approx), or qQ·qKᵀ
    C = None
    if cfg.approx and A_int is not None:
        fq_iq, ik_fk = torch.cat([FQ, IQ], -1), torch.cat([IK, FK], -1)
        c_bound = int(fq_iq.abs().amax()) * int(ik_fk.abs().amax()) * fq_iq.shape[-1] if fq_iq.numel() else 0
        if c_bound + (maxabs << cfg.frac_bits) < 2**31:  # T's int32 sum cannot overflow
            C = _int8_product(fq_iq, ik_fk, "C")
    if C is not None:
        T, t_frac = C.add_(A_int, alpha=1 << cfg.frac_bits), cfg.frac_bits  # int32: 2^f·A + F_Q·I_Kᵀ + I_Q·F_Kᵀ
        del A_int
    elif cfg.approx:
        del A_int, C
        T, t_frac = _exact_product(torch.cat([(IQ << cfg.frac_bits) + FQ, IQ], -1), torch.cat([IK, FK], -1)), cfg.frac_bits
    else:
        T, t_frac = _exact_product(qQ, qK), 2 * cfg.frac_bits
    if T is None:
        return None
    fixed = cfg.v_mode == "fixed"
    P = softmax_rows(T, t_frac, keep, D, cfg, 1.0 if fixed else 2.0**-cfg.prob_bits)  # steps 9-10
    if P is None:
        return None
    P = P[..., :N, :N].contiguous() if padded else P  # the plain form multiplies a contiguous copy too
    out_int = None
    if fixed:  # step 11 as the plain form: O = sat((P·qV) >> prob_bits)
        qV = fx.to_fixed(v, cfg.v_frac_bits, cfg.v_total_bits)
        out_int = fx.saturate(fx.ashr(fx.int_matmul(P.to(torch.int64), qV), cfg.prob_bits), cfg.v_total_bits)
        out_int = torch.where(hmask[:, :, None, None], out_int, 0)
        out = fx.from_fixed(out_int, cfg.v_frac_bits, v.dtype)
    else:
        out = torch.matmul(P.to(v.dtype), v)
        out = torch.where(hmask[:, :, None, None], out, torch.zeros((), dtype=v.dtype))
    del P, T
    if fused is not None:  # kept pairs of the surviving heads (padding rows and columns are invalid)
        kept = int((kept_h * hmask).sum())
    else:  # one count over every head (a per-head bool .sum() widens every element: seconds at 1,568 tokens)
        kept = int(torch.count_nonzero(keep[..., :N, :N] if padded else keep))
    nv = n_valid.to(torch.int64)
    ops = {
        "int_macs": int((nv**2).sum()) * H * D,
        "frac_macs": 2 * D * kept,
        "softmax_elements": kept,
        "pv_macs": D * kept,
        "kept_elements": kept,
        "dense_macs": 2 * int((nv**2).sum()) * H * D,
        "valid_elements": int((vpad.sum(-1, dtype=torch.int64) ** 2).sum()) * H,  # velem is vpad ⊗ vpad
    }
    stats = hm.HDPStats(block_mask=mask, head_mask=hmask, valid_blocks=vblk, valid_len=n_valid, block_size=b,
                         seq_len=N, padded=padded, head_importance=th, ops=ops, output_int=out_int, elem_keep=keep)
    return out, stats
