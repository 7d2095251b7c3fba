"""HDP's block and head masks: the integer rules that decide what attention keeps (docs/algorithms.md §5.1).

The pieces shared by the plain int64 form (`sparsa.attention.hdp`) and the exact float32 form for long
sequences (`sparsa.attention.hdp_fast`), so that both decide with the very same integer comparisons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from sparsa.errors import SparsaError

IMPORTANCE_VARIANTS = ("abs", "signed", "max", "rowmax")
TAU_MODES = ("abs", "mean")


@dataclass
class HDPStats:
    """Masks and counts of one HDP attention call (one layer).

    block_mask [B,H,NB,NB] bool (True = kept; computed for every head, pruned heads included: the
    integer pass always runs), head_mask [B,H] bool (True = kept), kept_blocks_per_row [B,H,NB],
    valid_blocks [B,NB,NB] bool, valid_len [B], seq_len (before padding), padded (rows added to reach a
    multiple of the block), ops: dict of MAC / element counts per docs/algorithms.md §5.3.
    output_int: the integer output codes (Q·.v_frac_bits) when v_mode="fixed", else None.
    """

    block_mask: torch.Tensor
    head_mask: torch.Tensor
    valid_blocks: torch.Tensor
    valid_len: torch.Tensor
    block_size: int
    seq_len: int
    padded: int
    head_importance: torch.Tensor
    ops: dict = field(default_factory=dict)
    output_int: torch.Tensor | None = None
    elem_keep: torch.Tensor | None = None  # [B,H,N,N] bool, kept valid elements of surviving heads

    @property
    def kept_blocks_per_row(self) -> torch.Tensor:
        return self.block_mask.sum(-1)

    def summary(self) -> dict:
        """Plain-number summary: block / head / attention sparsity and op counts."""
        vb = self.valid_blocks[:, None].expand_as(self.block_mask)
        # count_nonzero: a bool .sum() widens every element (seconds at 1,568 tokens x 12 layers)
        B, H = self.block_mask.shape[:2]
        n_valid_blocks = int(torch.count_nonzero(self.valid_blocks.expand(B, *self.block_mask.shape[2:]))) * H
        kept_blocks = int(torch.count_nonzero(self.block_mask if bool(self.valid_blocks.all()) else self.block_mask & vb))
        heads = self.head_mask.numel()
        out = {
            "block_size": self.block_size,
            "seq_len": self.seq_len,
            "padded": self.padded,
            "valid_blocks": n_valid_blocks,
            "kept_blocks": kept_blocks,
            "block_sparsity": 1 - kept_blocks / max(n_valid_blocks, 1),
            "heads": heads,
            "pruned_heads": heads - int(self.head_mask.sum()),
            "head_sparsity": 1 - int(self.head_mask.sum()) / max(heads, 1),
        }
        out.update(self.ops)
        ve, ke = self.ops.get("valid_elements", 0), self.ops.get("kept_elements", 0)
        out["attention_sparsity"] = 1 - ke / max(ve, 1)
        return out


def pad_to_block(x: torch.Tensor, block: int, dim: int = -2) -> tuple[torch.Tensor, int]:
    """Zero-pad `x` along `dim` to a multiple of `block`; returns (padded, rows added)."""
    n = x.shape[dim]
    extra = (-n) % block
    if extra == 0:
        return x, 0
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat([x, x.new_zeros(shape)], dim=dim), extra


def _blockify(x: torch.Tensor, b: int) -> torch.Tensor:
    """[..., N, N] → [..., NB, NB, b*b] (N a multiple of b)."""
    *lead, n, m = x.shape
    x = x.reshape(*lead, n // b, b, m // b, b).transpose(-3, -2)
    return x.reshape(*lead, n // b, m // b, b * b)


def block_importance(A_int: torch.Tensor, block: int, valid: torch.Tensor, variant: str = "abs") -> torch.Tensor:
    """Block importance θ of integer scores A `[..., N, N]` (N a multiple of `block`), int64 `[..., NB, NB]`.

    `valid` is a bool mask broadcastable to A (True = a real query/key pair); invalid elements are
    ignored: they add 0 to a sum and never win a max. Variants:
      abs    (seed): θ = Σ_{valid (i,j) ∈ block} |A[i,j]|
      signed:       θ = Σ_{valid} A[i,j]
      max:          θ = max_{valid} A[i,j]   (blocks with no valid element: 0)
    """
    if A_int.shape[-1] % block or A_int.shape[-2] % block:
        raise SparsaError(f"scores of shape {tuple(A_int.shape)} are not a multiple of block={block}", hint="pad first")
    valid = valid.expand_as(A_int)
    if variant == "abs":
        return _blockify(torch.where(valid, A_int.abs(), 0), block).sum(-1)
    if variant == "signed":
        return _blockify(torch.where(valid, A_int, 0), block).sum(-1)
    if variant in ("max", "rowmax"):
        low = torch.iinfo(torch.int64).min
        m = _blockify(torch.where(valid, A_int, low), block).amax(-1)
        return torch.where(m == low, 0, m)
    raise SparsaError(f"unknown importance variant {variant!r}", hint=f"use one of {IMPORTANCE_VARIANTS}")


def row_keep_mask(theta: torch.Tensor, valid: torch.Tensor, rho_q: int) -> torch.Tensor:
    """Bit-exact row-balanced threshold (docs/algorithms.md §5.1 step 7). Returns bool `[..., NB, NB]`, True = keep.

    theta: int64 `[..., NB, NB]`; valid: bool broadcastable to theta (True = a valid block; invalid
    blocks are excluded from n, Σ, max, min and are never kept); rho_q = round(256·ρ_B) ∈ [−256, 256].
    With n the number of valid blocks in the row, Σ their sum, max/min their extremes:
      ρq ≥ 0: keep iff 256·n·θ ≥ ρq·n·max + (256 − ρq)·Σ
      ρq < 0: keep iff 256·n·θ ≥ −ρq·n·min + (256 + ρq)·Σ
    All in int64, no division. A row with n = 0 keeps nothing; otherwise its maximum is always kept.
    """
    if not -256 <= int(rho_q) <= 256:
        raise SparsaError(f"rho_q={rho_q} out of range [-256, 256]", hint="rho_q = round(256 * rho_b), rho_b in [-1, 1]")
    rho_q = int(rho_q)
    valid = valid.expand_as(theta)
    big = torch.iinfo(torch.int64).max // 4
    n = valid.sum(-1, keepdim=True).to(torch.int64)
    s = torch.where(valid, theta, 0).sum(-1, keepdim=True)
    if rho_q >= 0:
        ext = torch.where(valid, theta, -big).amax(-1, keepdim=True)
        rhs = rho_q * n * ext + (256 - rho_q) * s
    else:
        ext = torch.where(valid, theta, big).amin(-1, keepdim=True)
        rhs = -rho_q * n * ext + (256 + rho_q) * s
    return valid & (256 * n * theta >= rhs) & (n > 0)


def row_keep_mask_gap(theta: torch.Tensor, valid: torch.Tensor, gap_int: int) -> torch.Tensor:
    """Gap rule (sparsa variant): keep iff θ ≥ max_row − gap_int over the row's valid blocks.

    With signed/max importance, θ is a score (sum over the block) and softmax weight decays as
    exp(score − row max): a block far below the row maximum carries ~no probability whatever the
    row's mean. One subtract and compare per block; the row max is already tracked by the SE."""
    valid = valid.expand_as(theta)
    big = torch.iinfo(torch.int64).max // 4
    mx = torch.where(valid, theta, -big).amax(-1, keepdim=True)
    return valid & (theta >= mx - int(gap_int)) & (mx > -big)


def rowmax_gap_mask(A_int: torch.Tensor, valid: torch.Tensor, block: int, gap_int: int) -> torch.Tensor:
    """`rowmax` importance + gap rule (sparsa's default `hdp`): bool block mask `[..., NB, NB]`.

    Each *query row* i has its own maximum m_i = max_{valid j} A[i,j]; element (i,j) qualifies iff
    A[i,j] ≥ m_i − gap_int; block (r,c) is kept iff any of its valid elements qualifies. Per-row
    maxima matter with b > 1: two query rows of one block-row can have very different score scales,
    and a threshold shared by the block-row starves the weaker row. In hardware: b running maxima
    per block-row (one per query row), one compare per element, an OR per block."""
    valid = valid.expand_as(A_int)
    big = torch.iinfo(torch.int64).max // 4
    mx = torch.where(valid, A_int, -big).amax(-1, keepdim=True)
    q = valid & (A_int >= mx - int(gap_int))
    return _blockify(q, block).any(-1)


def head_importance(A_int: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """θ_H = Σ |A| over valid elements, int64 `[...]` (docs/algorithms.md §5.1 step 6)."""
    return torch.where(valid.expand_as(A_int), A_int.abs(), 0).sum((-1, -2))


def head_keep(theta_h: torch.Tensor, tau_h: float | None, n_valid: torch.Tensor, mode: str = "abs") -> torch.Tensor:
    """Head keep mask (True = keep). abs: θ_H ≥ τ_H with τ_H = ceil... compared as integers
    (θ_H ≥ ceil(τ_H)); mean: 256·θ_H ≥ round(256·τ_H)·N_valid² (no division). None keeps all."""
    if tau_h is None:
        return torch.ones_like(theta_h, dtype=torch.bool)
    if mode == "abs":
        return theta_h >= int(math.ceil(float(tau_h)))
    if mode == "mean":
        return 256 * theta_h >= int(round(256 * float(tau_h))) * n_valid.to(torch.int64) ** 2
    raise SparsaError(f"unknown tau_mode {mode!r}", hint=f"use one of {TAU_MODES}")


def _valid_mask(valid, b, n, device):
    if valid is None:
        return torch.ones(b, n, dtype=torch.bool, device=device)
    valid = valid.to(torch.bool)
    if valid.shape != (b, n):
        raise SparsaError(f"valid mask has shape {tuple(valid.shape)}, expected {(b, n)}")
    return valid


def expand_block_mask(mask: torch.Tensor, block: int) -> torch.Tensor:
    """[..., NB, NB] → element mask [..., NB·b, NB·b] (M_elem[i,j] = M[i//b, j//b])."""
    return mask.repeat_interleave(block, -2).repeat_interleave(block, -1)
