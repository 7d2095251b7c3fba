"""Baselines in HDP's harness (docs/algorithms.md §5.4): dense, Top-K, Energon two-round filtering, SpAtten heads.

Every method decides a kept-element mask (and a head mask), then shares HDP's arithmetic for the
kept scores (`hdp.attention_from_mask`), so a comparison isolates *which* positions are pruned.
Each function returns `(output [B,H,N,D_h], HDPStats)` like `hdp_attention_int`. All per-input,
per-(batch item, head) decisions: results do not depend on how a batch is split.
"""

from __future__ import annotations

import math

import torch

from sparsa.attention import fixedpoint as fx
from sparsa.attention.hdp import (
    HDPConfig,
    HDPStats,
    _valid_mask,
    attendable,
    attention_from_mask,
    block_masks_int,
    check_qkv,
    expand_block_mask,
    hdp_attention_int,
    row_keep_mask,
)
from sparsa.errors import SparsaError, check_fraction


def _pairs(valid, bias, B, N):
    """[B,1,N,N] valid ∧ attendable pairs (Swin's shift-masked pairs out, see `hdp.attendable`)."""
    velem = (valid[:, :, None] & valid[:, None, :])[:, None]
    att = attendable(bias, B, N)
    return velem if att is None else velem & att[:, None]


def _stats(keep_blocks, head_mask, vblk, valid, block, N, padded, ops, out_int=None, head_imp=None, keep_elem=None,
           n_pairs=None):
    nv = valid.sum(-1).to(torch.int64)
    B, H = head_mask.shape
    D = ops.pop("_D")
    ops["int_macs"] = ops.get("int_macs", 0)
    ops["dense_macs"] = 2 * int((nv**2).sum()) * H * D
    ops["valid_elements"] = (int((nv**2).sum()) if n_pairs is None else int(n_pairs)) * H
    return HDPStats(
        block_mask=keep_blocks,
        head_mask=head_mask,
        valid_blocks=vblk,
        valid_len=nv,
        block_size=block,
        seq_len=N,
        padded=padded,
        head_importance=head_imp if head_imp is not None else torch.zeros(B, H, dtype=torch.int64),
        ops=ops,
        output_int=out_int,
        elem_keep=keep_elem,
    )


def dense_attention(q, k, v, valid=None, bias=None):
    """Float reference: softmax(QKᵀ/√D_h + bias) V over valid keys (no pruning, no fixed point)."""
    check_qkv(q, k, v)
    B, H, N, D = q.shape
    valid = _valid_mask(valid, B, N, q.device)
    s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(D)
    if bias is not None:
        s = s + bias
    pairs = valid[:, None, :, None] & valid[:, None, None, :]
    p = torch.softmax(s.masked_fill(~pairs, float("-inf")), -1).nan_to_num(0.0)
    out = torch.matmul(p, v)
    keep = _pairs(valid, bias, B, N).expand(B, H, N, N)  # the dense softmax also weighs shift-masked pairs (≈ e^-100)
    vblk = keep[:, 0]
    ops = {"_D": D, "kept_elements": int(keep.sum()), "frac_macs": 0, "softmax_elements": int(keep.sum()),
           "pv_macs": int(keep.sum()) * D}
    st = _stats(keep.clone(), torch.ones(B, H, dtype=torch.bool), vblk, valid, 1, N, 0, ops, keep_elem=keep,
                n_pairs=vblk.sum())
    st.ops["int_macs"] = int(keep.sum()) * D
    return out, st


def topk_attention(q, k, v, ratio: float, cfg: HDPConfig | None = None, valid=None, bias=None, granularity="block"):
    """Top-K (docs/algorithms.md §5.4): per block-row keep K = max(1, ceil((1 − ratio)·n)) blocks of largest θ
    (HDP's step-5 importance, `cfg.importance`; ties → lower column index), or with
    granularity="element" per query row the K largest exact scores. Then HDP steps 8–11."""
    check_fraction("topk ratio", ratio)
    cfg = cfg or HDPConfig()
    check_qkv(q, k, v)
    B, H, N, D = q.shape
    valid = _valid_mask(valid, B, N, q.device)
    if granularity == "element":
        cfg = cfg.with_(block=1)
    elif granularity != "block":
        raise SparsaError(f"unknown topk granularity {granularity!r}", hint="use 'block' or 'element'")
    ints = block_masks_int(q, k, cfg.with_(rho_b=-1.0, threshold="rho"), valid, None, attendable(bias, B, N))
    vblk = ints["vblk"][:, None].expand(B, H, -1, -1)
    if granularity == "element":
        score = torch.matmul(q, k.transpose(-1, -2)).to(torch.float64)
        if bias is not None:
            score = score + bias * math.sqrt(D)
        theta = score
        vblk = ints["velem"][..., :N, :N].expand(B, H, -1, -1)
    else:
        theta = ints["theta"].to(torch.float64)
    n = vblk.sum(-1, keepdim=True)
    kk = torch.clamp(torch.ceil((1 - ratio) * n.to(torch.float64)).to(torch.int64), min=1)
    # stable descending rank: ties keep the lower column index first
    order = torch.sort(theta.masked_fill(~vblk, float("-inf")), dim=-1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(order.shape[-1]).expand_as(order).contiguous())
    mask = (rank < kk) & vblk
    keep_elem = expand_block_mask(mask, cfg.block) & ints["velem"]
    out, out_int, ops = attention_from_mask(q, k, v, keep_elem, ints["head_mask"], cfg, ints, bias, ints["velem"])
    ops["_D"] = D
    ops["int_macs"] = int((ints["n_valid"].to(torch.int64) ** 2).sum()) * H * D
    return out, _stats(mask, ints["head_mask"], ints["vblk"], valid, cfg.block, N, ints["padded"], ops, out_int,
                       ints["head_importance"], keep_elem, ints["velem"].sum())


def _sym_quant_per_head(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-(batch item, head) quantization to `bits` (narrow range), int64 codes."""
    qm = 2 ** (bits - 1) - 1
    scale = x.abs().amax((-1, -2), keepdim=True).clamp(min=1e-12) / qm
    return torch.round(x.to(torch.float64) / scale).clamp(-qm, qm).to(torch.int64)


def energon_attention(q, k, v, ratio: float, cfg: HDPConfig | None = None, valid=None, bias=None,
                      bits=(2, 4), alphas=None):
    """Energon-style two-round filtering (docs/algorithms.md §5.4), element granularity.

    Round t quantizes Q, K symmetrically per (item, head) to bits[t], computes the integer scores of
    the still-alive pairs, and per query row applies the bit-exact step-7 rule (`row_keep_mask`
    with 1×1 blocks) with ratio α_t over the alive pairs. Survivors use HDP's steps 8–11.
    `ratio` ∈ [-1, 1] sets α_1 = α_2 = ratio unless `alphas` is given."""
    cfg = (cfg or HDPConfig()).with_(block=1)
    check_qkv(q, k, v)
    B, H, N, D = q.shape
    valid = _valid_mask(valid, B, N, q.device)
    alphas = tuple(alphas) if alphas is not None else (ratio, ratio)
    for a in alphas:
        if not -1.0 <= a <= 1.0:
            raise SparsaError(f"energon ratio {a} out of range [-1, 1]")
    velem = _pairs(valid, bias, B, N).expand(B, H, N, N)
    alive = velem.clone()
    for b_t, a_t in zip(bits, alphas):
        s = fx.int_matmul(_sym_quant_per_head(q, b_t), _sym_quant_per_head(k, b_t).transpose(-1, -2))
        alive = row_keep_mask(s, alive, int(round(256 * a_t)))
    hm = torch.ones(B, H, dtype=torch.bool)
    out, out_int, ops = attention_from_mask(q, k, v, alive, hm, cfg, None, bias, velem)
    ops["_D"] = D
    ops["int_macs"] = 0
    vblk = velem[:, 0]
    return out, _stats(alive, hm, vblk, valid, 1, N, 0, ops, out_int, None, alive, vblk.sum())


class SpAttenState:
    """Cascade head pruning state across the layers of one forward (docs/algorithms.md §5.4).

    s [B,H] accumulated Σ|O_h|; pruned [B,H] bool. Layer 0 prunes nothing; before layer l ≥ 1 the
    heads with the smallest s are added until floor(p·H) are pruned; pruned stays pruned."""

    def __init__(self, ratio: float):
        self.ratio = check_fraction("spatten head ratio", ratio)
        self.s = None
        self.pruned = None
        self.layer = 0

    def head_mask(self, B: int, H: int) -> torch.Tensor:
        if self.s is None or self.s.shape != (B, H):
            self.s = torch.zeros(B, H, dtype=torch.float64)
            self.pruned = torch.zeros(B, H, dtype=torch.bool)
            self.layer = 0
        if self.layer >= 1:
            target = int(math.floor(self.ratio * H))
            need = target - self.pruned.sum(-1)  # [B]
            order = torch.sort(self.s.masked_fill(self.pruned, float("inf")), dim=-1, stable=True).indices
            rank = torch.empty_like(order)
            rank.scatter_(-1, order, torch.arange(H).expand_as(order).contiguous())
            self.pruned |= rank < need[:, None]
        return ~self.pruned

    def update(self, out: torch.Tensor) -> None:
        self.s += out.abs().sum((-1, -2)).to(torch.float64)
        self.layer += 1


def spatten_attention(q, k, v, state: SpAttenState, cfg: HDPConfig | None = None, valid=None, bias=None):
    """SpAtten cascade head pruning: pruned heads output zeros, the rest is dense HDP arithmetic."""
    cfg = cfg or HDPConfig()
    check_qkv(q, k, v)
    B, H, N, D = q.shape
    valid = _valid_mask(valid, B, N, q.device)
    hm = state.head_mask(B, H)
    cfg1 = cfg.with_(block=1)
    velem = _pairs(valid, bias, B, N).expand(B, H, N, N)
    out, out_int, ops = attention_from_mask(q, k, v, velem, hm, cfg1, None, bias, velem)
    state.update(out)
    ops["_D"] = D
    vblk = velem[:, 0]
    # no block pruning: every valid element block is "kept"; the head mask says which heads ran
    return out, _stats(velem.clone(), hm, vblk, valid, 1, N, 0, ops, out_int, None, velem & hm[:, :, None, None],
                       vblk.sum())


__all__ = ["dense_attention", "topk_attention", "energon_attention", "spatten_attention", "SpAttenState",
           "hdp_attention_int"]
