"""HDP's per-query-row integer passes fused, compiled with numba: the integer softmax (steps 9–10 of
`sparsa.attention.hdp`) and the default rowmax mask with the head importance (steps 5–7).

The torch form (`scale_scores_int` → `int_softmax`) makes a dozen int64 passes over every score of a
head; at 1,568 tokens that is most of the time of `sparsa sim --attention hdp`. Here one row is read
once and its probabilities written once, with the very same integer steps (int64 scalars, arithmetic
shifts, floor division), so the codes are identical: `tests/test_attention_hdp_fast.py` checks it
against the torch form.

`softmax_rows(scores, keep, ...)` and `rowmax_keep(A, ...)` return None where numba is missing or fails
to compile; the caller then runs the torch form.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch

try:  # a declared dependency; without it (or where it cannot compile) the torch form runs
    import numba
except Exception:  # noqa: BLE001
    numba = None
_FAILED = numba is None
# one parallel launch at a time: numba's work-queue layer (where OpenMP and TBB are missing) aborts the
# process on a second concurrent one, so callers on several Python threads take turns
_LAUNCH = threading.Lock()


def _njit(**kw):
    return numba.njit(**kw) if numba is not None else (lambda f: f)


@_njit(inline="always")
def _ashr(v, s):
    # arithmetic shift right by s (left when s < 0), as fixedpoint.ashr
    return v >> s if s >= 0 else v << (-s)


_prange = numba.prange if numba is not None else range


@_njit(parallel=True, cache=True, nogil=True)
def _rows(T, keep, c, sh, l2, b_q, a_q, c_q, poly_sh, M, magic, newton, prob_bits, scale, out):
    R, N = T.shape
    low = np.int64(-(2**61))
    for r in _prange(R):
        x = np.empty(N, np.int64)
        mx = low
        # x = (T·C) >> (fT + 16 − S): the scaled score (scale_scores_int); the shift's sign hoisted and
        # the max taken without a branch, so this loop vectorises
        if sh >= 0:
            for j in range(N):
                v = (np.int64(T[r, j]) * c) >> sh
                x[j] = v
                mx = max(mx, v if keep[r, j] else low)
        else:
            for j in range(N):
                v = (np.int64(T[r, j]) * c) << (-sh)
                x[j] = v
                mx = max(mx, v if keep[r, j] else low)
        s = np.int64(0)
        for j in range(N):
            e = np.int64(0)
            if keep[r, j]:
                # int_exp(x − max): k = (−z)//L2, p = z + k·L2, poly = ((a·pb²) >> sh') + c, e = poly >> k
                z = x[j] - mx
                k = np.int64(np.uint64(-z) // np.uint64(l2))  # −z ≥ 0: the unsigned division is the floor
                pb = z + k * l2 + b_q
                poly = _ashr(a_q * pb * pb, poly_sh) + c_q
                if k <= 30:
                    e = poly >> k
            x[j] = e
            s += e
        # int_reciprocal(Σ): L = floor(log2 Σ), m = Σ in Q1.M, y ≈ 1/m (+ Newton steps); Σ = 0 gives y = 0
        y = np.int64(0)
        L = np.int64(0)
        if s > 0:
            t = s
            while t > 1:
                t >>= 1
                L += 1
            m_q = _ashr(s, L - M)
            y = (((np.int64(3) << M) - m_q) * magic) >> 17
            for _ in range(newton):
                y = (y * ((np.int64(2) << M) - ((m_q * y) >> M))) >> M
        shp = M + L - prob_bits
        if shp >= 0:
            for j in range(N):
                out[r, j] = ((x[j] * y) >> shp) * scale
        else:
            for j in range(N):
                out[r, j] = ((x[j] * y) << (-shp)) * scale


def softmax_rows(T: torch.Tensor, t_frac: int, keep: torch.Tensor, head_dim: int, cfg, scale: float) -> torch.Tensor | None:
    """P · `scale` as float32 `[..., N]` from exact integer scores `T` (int32, or float32 holding integers;
    value T·2^-t_frac) restricted to `keep` (bool, same shape): `int_softmax(scale_scores_int(T, ...), keep)`.

    Written over T's storage (T is consumed). `scale` is 2^-prob_bits for probabilities or 1 for
    the integer codes; either is exact in float32 (codes ≤ 2^(prob_bits+1) < 2^24). None where numba is
    unavailable."""
    from sparsa.attention.fixedpoint import EXP_A, EXP_B, EXP_C, RECIP_MAGIC, SCALE_BITS

    global _FAILED
    if _FAILED:
        return None
    S, E = cfg.score_bits, cfg.exp_bits
    c = int(round(2**SCALE_BITS / math.sqrt(head_dim)))
    sh = t_frac + SCALE_BITS - S
    l2 = int(round(math.log(2) * 2**S))
    b_q, a_q, c_q = int(round(EXP_B * 2**S)), int(round(EXP_A * 2**16)), int(round(EXP_C * 2**E))
    shape = T.shape
    t2 = T.reshape(-1, shape[-1])
    k2 = keep.reshape(-1, shape[-1])
    if not (t2.is_contiguous() and k2.is_contiguous()):
        t2, k2 = t2.contiguous(), k2.contiguous()
    tn, kn = t2.numpy(), k2.numpy()
    # P over T's storage: a row is read whole before it is written (int32 scores: the same 4 bytes)
    p2 = t2 if t2.dtype == torch.float32 else t2.view(torch.float32)
    try:
        with _LAUNCH:
            _rows(tn, kn, c, sh, l2, b_q, a_q, c_q, 16 + 2 * S - E, cfg.recip_bits, RECIP_MAGIC, cfg.newton_steps,
                  cfg.prob_bits, np.float32(scale), p2.numpy())
    except Exception:  # noqa: BLE001 - a compile failure on this platform (before any write): use torch
        _FAILED = True
        return None
    return p2.reshape(shape)


@_njit(parallel=True, cache=True, nogil=True)
def _rowmax(A, vb, rows_per_batch, gap, keep, row_abs, row_kept, row_maxabs):
    R, N = A.shape
    for r in _prange(R):
        bi = r // rows_per_batch
        row_valid = vb[bi, r % N]
        mxa = 0.0
        mx = -np.inf  # float64 compares are exact for A's int32 and float32 integers alike
        s = np.int64(0)
        for j in range(N):
            a = np.float64(A[r, j])
            mxa = max(mxa, abs(a))  # over every element: the caller's exactness bound
            if vb[bi, j]:
                s += np.int64(abs(a))
                mx = max(mx, a)
        if not row_valid:  # an invalid query row keeps nothing and weighs nothing
            s = 0
            mx = np.inf
        thr = mx - gap  # exact: |A| + gap < 2^24 is checked by the caller
        n = np.int64(0)
        for j in range(N):
            k = vb[bi, j] and np.float64(A[r, j]) >= thr
            keep[r, j] = k
            n += k
        row_maxabs[r] = mxa
        row_abs[r] = s
        row_kept[r] = n


def rowmax_keep(A: torch.Tensor, vpad: torch.Tensor, gap_int: int):
    """The rowmax rule of `hdp_fast` in one pass over `A` (`[B, H, N, N]`, int32 or float32 holding integers;
    `vpad` bool `[B, N]` the valid tokens): keep = valid pair and A ≥ (row max over valid keys) − gap;
    returns (keep bool `[B,H,N,N]`, θ_H = Σ|A| over valid pairs int64 `[B,H]`, kept pairs int64 `[B,H]`,
    max |A| over every element as an int), or None where numba is unavailable."""
    global _FAILED
    if _FAILED:
        return None
    B, H, N, _ = A.shape
    a2 = A.reshape(-1, N)
    if not a2.is_contiguous():
        a2 = a2.contiguous()
    keep = torch.empty(A.shape, dtype=torch.bool)
    row_abs = np.empty(B * H * N, np.int64)
    row_kept = np.empty(B * H * N, np.int64)
    row_maxabs = np.empty(B * H * N, np.float64)
    try:
        with _LAUNCH:
            _rowmax(a2.numpy(), vpad.contiguous().numpy(), H * N, float(gap_int), keep.view(-1, N).numpy(),
                    row_abs, row_kept, row_maxabs)
    except Exception:  # noqa: BLE001 - a compile failure on this platform: use torch
        _FAILED = True
        return None
    per_head = lambda x: torch.from_numpy(x.reshape(B, H, N).sum(-1))  # noqa: E731
    return keep, per_head(row_abs), per_head(row_kept), int(row_maxabs.max()) if row_maxabs.size else 0


def warm() -> bool:
    """Compile every kernel for the score types the HDP forms pass (int32 and float32) into numba's
    on-disk cache, so that the first `sparsa sim --attention hdp` does not spend seconds compiling."""
    from types import SimpleNamespace

    from sparsa.attention.fixedpoint import SCALE_BITS

    cfg = SimpleNamespace(score_bits=12, exp_bits=15, recip_bits=15, newton_steps=1, prob_bits=15)
    vpad = torch.ones(1, 4, dtype=torch.bool)
    for dtype in (torch.int32, torch.float32):
        scores = torch.arange(-8, 8, dtype=dtype).reshape(1, 1, 4, 4)
        got = rowmax_keep(scores.clone(), vpad, 2)
        if got is None or softmax_rows(scores.clone(), SCALE_BITS - 12, got[0], 16, cfg, 1.0) is None:
            return False
    return True


if __name__ == "__main__":  # compile ahead of first use (make install runs this)
    from sparsa.attention import hdp_rows as _module  # the cache later imports read is the importable module's

    print("HDP row kernels (numba):", "ready" if _module.warm() else "unavailable: the torch forms run")
