"""Closed-form timing and traffic of one GEMM on a systolic array (SCALE-Sim v3's model, analytically).

SCALE-Sim builds per-cycle demand matrices and walks them line by line; here the same quantities
are written as formulas per fold (= array tile), so the cost depends on the number of tiles, never
on the number of cycles.

Compute (SCALE-Sim `systolic_compute_{os,ws,is}.py`): the GEMM C[M,N] = A[M,K] . B[K,N] maps to
(Sr, Sc, T) = (M, N, K) for OS, (K, N, M) for WS, (K, M, N) for IS; the array covers an Sr x Sc
output space in folds of rows x cols; each fold streams T operand rows plus fill and drain:
    OS: T + rows + cols - 2 cycles per fold        WS / IS: T + 2*rows + cols - 2 cycles per fold
SCALE-Sim's "Total Cycles" is the index of the last demand line, i.e. (folds * per_fold - 1) + stalls.

Memory (SCALE-Sim `double_buffered_scratchpad_mem.py`, `read_buffer.py`, `write_buffer.py`): each
operand SRAM is split into an active half that serves the array and a prefetch half that DRAM
fills; the operand stream is cut into sets of ceil(size/100) elements; a demand outside the
active window slides the window by one prefetch half, which costs ceil(prefetch/bandwidth) + 1
cycles of DRAM time. An operand whose stream fits in the active half is fetched once and never
stalls. Otherwise the window walks the stream once per pass, and a fold that is revisited after
the window has moved past it costs a full turn around the (circular) stream. Stalls are the DRAM
time in excess of compute time (the max over the three interfaces, or the sum when the DRAM
bandwidth is shared).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FoldGeometry:
    sr: int  # output space mapped on array rows
    sc: int  # output space mapped on array columns
    t: int  # streamed (temporal) dimension
    row_folds: int
    col_folds: int
    per_fold: int  # cycles of one fold including fill and drain


def fold_geometry(m: int, k: int, n: int, rows: int, cols: int, dataflow: str) -> FoldGeometry:
    if dataflow == "os":
        sr, sc, t = m, n, k
        per_fold = t + rows + cols - 2
    elif dataflow == "ws":
        sr, sc, t = k, n, m
        per_fold = t + 2 * rows + cols - 2
    elif dataflow == "is":
        sr, sc, t = k, m, n
        per_fold = t + 2 * rows + cols - 2
    else:  # validated by Arch; kept for direct callers
        raise ValueError(f"dataflow {dataflow!r}")
    return FoldGeometry(sr, sc, t, -(-sr // rows), -(-sc // cols), per_fold)


def per_fold_cycles(t_eff: np.ndarray | int, rows: int, cols: int, dataflow: str) -> np.ndarray | int:
    """Cycles of folds whose streamed dimension is t_eff (0 = fold skipped entirely)."""
    fill = rows + cols - 2 if dataflow == "os" else 2 * rows + cols - 2
    t = np.asarray(t_eff)
    return np.where(t > 0, t + fill, 0)


@dataclass(frozen=True)
class OperandStream:
    """How the array walks one operand: `elems` valid words, `passes` sequential walks over the
    whole stream, `revisits` folds re-read after the window moved on, each fold `fold_elems` words."""

    elems: int
    passes: int
    revisits: int
    fold_elems: int


def operand_streams(g: FoldGeometry, m: int, k: int, n: int, rows: int, cols: int, dataflow: str):
    """(ifmap, filter, ofmap_writes) for SCALE-Sim's loop order `for col_fold: for row_fold`."""
    if dataflow == "os":
        ifmap = OperandStream(m * k, g.col_folds, 0, k * rows)
        # filter fold fc is used row_folds times in a row; free if it fits the active window
        filt = OperandStream(k * n, 1, g.col_folds * (g.row_folds - 1), k * cols)
        writes = m * n
    elif dataflow == "ws":
        ifmap = OperandStream(m * k, g.col_folds, 0, m * rows)
        filt = OperandStream(k * n, 1, 0, rows * cols)
        writes = m * n * g.row_folds  # partial sums leave the array once per row fold
    else:  # is: the ifmap tile is stationary, the filter streams once per column fold
        ifmap = OperandStream(m * k, 1, 0, rows * cols)
        filt = OperandStream(k * n, g.col_folds, 0, n * rows)
        writes = m * n * g.row_folds
    return ifmap, filt, writes


# ---- SCALE-Sim's prefetch window, walked fold by fold ---------------------------------------------
#
# The operand stream is SCALE-Sim's prefetch matrix: folds stacked vertically (rows x width words,
# unused columns of a partial last fold padded with -1), read in anti-diagonal order (OS ifmap and
# filter, WS ifmap: "ISSUE #15" skew) or row by row (WS filter). Sets of `eps` valid words make up
# the window. A fold visit is reduced to the stream positions of the words it demands first and
# last (and, for the reversed WS filter fold, its lowest word); the window slides forward to cover
# each point and wraps around the circular stream when a point lies behind it. The walk costs one
# step per fold visit, never per cycle.


def _invalid_before_diag(d: np.ndarray, i: np.ndarray, rows: int, width: int, last0: int, valid_last: int) -> np.ndarray:
    """Padding words (rows >= last0, cols >= valid_last) before (i, d - i) in anti-diagonal order."""
    if valid_last >= width:
        return np.zeros_like(d)
    j = np.arange(valid_last, width)
    # whole diagonals before d: words (r, j) with r in [last0, rows) and r + j < d
    before = np.clip(d[:, None] - j[None, :] - last0, 0, rows - last0).sum(axis=1)
    # same diagonal, earlier offset = larger row = smaller column j' < j0
    j0 = d - i
    r = d[:, None] - j[None, :]
    same = ((j[None, :] < j0[:, None]) & (r >= last0) & (r < rows)).sum(axis=1)
    return before + same


def _diag_pos(i: np.ndarray, j: np.ndarray, rows: int, width: int, last0: int, valid_last: int) -> np.ndarray:
    """Valid-word position of element (i, j) of a rows x width matrix read in anti-diagonal order."""
    d = i + j
    return _cells_before_diag(d, rows, width) + (np.minimum(d, rows - 1) - i) - _invalid_before_diag(d, i, rows, width, last0, valid_last)


def _cells_before_diag(d: np.ndarray, rows: int, width: int) -> np.ndarray:
    """Cells (r, c) of a rows x width matrix with r + c < d, in closed form (rows can be huge: K x folds).
    Row r holds min(width, d - r) of them for r < min(rows, d): `full` rows hold `width`, the rest d - r."""
    d = np.asarray(d, dtype=np.int64)
    top = np.minimum(rows, d)
    full = np.clip(d - width + 1, 0, top)
    part = top - full
    return full * width + part * d - (full + top - 1) * part // 2


def _row_pos(i: np.ndarray, j: np.ndarray, width: int, last0: int, valid_last: int) -> np.ndarray:
    """Valid-word position of (i, j) in row-major order with padded columns in rows >= last0."""
    pad = width - valid_last
    inv = np.where(i > last0, (i - last0) * pad, 0) + np.where(i >= last0, np.maximum(0, j - valid_last), 0)
    return i * width + j - inv


def _walk_py(points: np.ndarray, n_sets: int, a: int, p: int) -> int:
    off = 0
    k = 0
    for s in points:
        s = int(s) + off
        while s < k * p:
            off += n_sets
            s += n_sets
        need = max(0, -(-(s - a + 1) // p))
        if need > k:
            k = need
    return k


_WALK = None


def _walker():
    """The walk compiled with numba when available (one step per fold visit either way)."""
    global _WALK
    if _WALK is None:
        try:
            import numba

            _WALK = numba.njit(cache=True)(_walk_py)
        except Exception:  # noqa: BLE001 - numba missing or failing: the plain loop gives the same answer
            _WALK = _walk_py
    return _WALK


def window_points(g: FoldGeometry, m: int, k: int, n: int, rows: int, cols: int, dataflow: str, which: str,
                  max_points: int | None = None) -> np.ndarray | None:
    """Stream positions (valid words) each fold visit demands, in SCALE-Sim's visit order
    (`for col_fold: for row_fold`); None where the walk is not modelled (IS) or where it would
    take more than `max_points` points (the caller then uses the closed form)."""
    per_visit = 3 if (dataflow, which) == ("ws", "filter") else 2
    if max_points is not None and per_visit * g.row_folds * g.col_folds > max_points:
        return None
    fc, fr = np.meshgrid(np.arange(g.col_folds), np.arange(g.row_folds), indexing="ij")
    fc, fr = fc.ravel(), fr.ravel()
    t = g.t
    if dataflow in ("os", "ws") and which == "ifmap":
        width, nf, span = rows, g.row_folds, g.sr
        f = fr
    elif dataflow == "os" and which == "filter":
        width, nf, span = cols, g.col_folds, g.sc
        f = fc
    elif dataflow == "ws" and which == "filter":  # row-major (col_folds*K, cols), fold rows demanded last first
        valid_last = n - (g.col_folds - 1) * cols
        last0 = (g.col_folds - 1) * k
        rs = fc * k + fr * rows
        re = rs + np.minimum(rows, k - fr * rows)
        vc = np.where(fc == g.col_folds - 1, valid_last, cols)
        first = _row_pos(re - 1, np.zeros_like(re), cols, last0, valid_last)
        top = _row_pos(re - 1, vc - 1, cols, last0, valid_last)
        low = _row_pos(rs, np.zeros_like(rs), cols, last0, valid_last)
        return np.stack([first, top, low], axis=1).ravel()
    else:
        return None
    valid_last = span - (nf - 1) * width
    last0 = (nf - 1) * t
    total_rows = nf * t
    wf = np.where(f == nf - 1, valid_last, width)
    first = _diag_pos(f * t, np.zeros_like(f), total_rows, width, last0, valid_last)
    last = _diag_pos(f * t + t - 1, wf - 1, total_rows, width, last0, valid_last)
    return np.stack([first, last], axis=1).ravel()


@dataclass(frozen=True)
class ReadBufferModel:
    total_elems: int
    active_frac: float = 0.5

    @property
    def active(self) -> int:
        return int(math.ceil(self.total_elems * self.active_frac))

    @property
    def prefetch(self) -> int:
        return self.total_elems - self.active

    # fold visits up to which the exact walk runs (beyond: the closed form below)
    max_walk_points: int = 2_000_000

    def events(self, s: OperandStream, points: np.ndarray | None = None) -> int:
        """Number of prefetches (window slides) the walk over stream `s` needs."""
        eps = max(1, math.ceil(self.total_elems / 100))
        n_sets = math.ceil(s.elems / eps)
        a = math.ceil(self.active / eps)
        p = max(1, math.ceil(self.prefetch / eps))
        if n_sets <= a:
            return 0
        if points is not None and points.size <= self.max_walk_points:
            sets = np.ascontiguousarray(points // eps, dtype=np.int64)
            walk = _walker() if sets.size > 20_000 else _walk_py  # small walks: not worth a JIT compile
            return int(walk(sets, n_sets, a, p))
        # closed form: sequential passes, plus a full turn for each fold revisited after the window moved
        revisits = s.revisits if math.ceil(s.fold_elems / eps) > a else 0
        dist = (s.passes + revisits) * n_sets - a
        return max(0, math.ceil(dist / p))

    def dram_elems(self, s: OperandStream, events: int) -> int:
        return min(s.elems, self.active) + events * self.prefetch

    def dram_cycles(self, events: int, words_per_cycle: float) -> float:
        per_event = math.ceil(self.prefetch / words_per_cycle) + 1
        return events * per_event
