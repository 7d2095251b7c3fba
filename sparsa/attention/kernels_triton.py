"""Triton GPU block-sparse attention (optional; used only on CUDA tensors when Triton is installed).

One program per (batch·head, query block): an online-softmax (flash-attention style) loop over the
key blocks whose mask bit is set; pruned blocks are skipped before any load. Untested on this
project's CPU-only machines; `kernels.block_sparse_attention` never requires it.
"""

from __future__ import annotations

import torch

from sparsa.errors import SparsaError

try:  # pragma: no cover - GPU only
    import triton
    import triton.language as tl

    @triton.jit
    def _bs_attn_kernel(Q, K, V, M, O, scale, N, NB, D: tl.constexpr, BLOCK: tl.constexpr):
        bh = tl.program_id(0)
        r = tl.program_id(1)
        offs_m = r * BLOCK + tl.arange(0, BLOCK)
        offs_d = tl.arange(0, D)
        base = bh * N * D
        q = tl.load(Q + base + offs_m[:, None] * D + offs_d[None, :])
        m_i = tl.full([BLOCK], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK], tl.float32)
        acc = tl.zeros([BLOCK, D], tl.float32)
        for c in range(0, NB):
            keep = tl.load(M + (bh * NB + r) * NB + c)
            if keep != 0:
                offs_n = c * BLOCK + tl.arange(0, BLOCK)
                k = tl.load(K + base + offs_n[:, None] * D + offs_d[None, :])
                s = tl.dot(q, tl.trans(k)) * scale
                m_new = tl.maximum(m_i, tl.max(s, 1))
                p = tl.exp(s - m_new[:, None])
                alpha = tl.exp(m_i - m_new)
                l_i = l_i * alpha + tl.sum(p, 1)
                v = tl.load(V + base + offs_n[:, None] * D + offs_d[None, :])
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
                m_i = m_new
        l_safe = tl.where(l_i > 0, l_i, 1.0)
        out = acc / l_safe[:, None]
        tl.store(O + base + offs_m[:, None] * D + offs_d[None, :], out)

    HAVE_TRITON = True
except Exception:  # no triton / no GPU build
    HAVE_TRITON = False


def triton_block_sparse_attention(q, k, v, block_mask, block: int, scale: float):
    """q,k,v [B,H,N,D] CUDA; block_mask [B,H,N/block,N/block]; block ≥ 16, D a power of two."""
    if not HAVE_TRITON or not q.is_cuda:
        raise SparsaError("the Triton kernel needs a CUDA device and the triton package",
                          hint="on CPU, kernels.block_sparse_attention uses the C++ kernel")
    B, H, N, D = q.shape
    NB = N // block
    qc, kc, vc = (t.reshape(B * H, N, D).contiguous() for t in (q, k, v))
    m = block_mask.reshape(B * H, NB, NB).to(torch.int32).contiguous()
    o = torch.empty_like(qc)
    _bs_attn_kernel[(B * H, NB)](qc, kc, vc, m, o, scale, N, NB, D=D, BLOCK=block)
    return o.reshape(B, H, N, D)
