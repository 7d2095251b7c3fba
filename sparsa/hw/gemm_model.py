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

    def events(self, s: OperandStream) -> int:
        """Number of prefetches (window slides) the walk over stream `s` needs."""
        eps = max(1, math.ceil(self.total_elems / 100))
        n_sets = math.ceil(s.elems / eps)
        a = math.ceil(self.active / eps)
        p = max(1, math.ceil(self.prefetch / eps))
        if n_sets <= a:
            return 0
        revisits = s.revisits if math.ceil(s.fold_elems / eps) > a else 0
        dist = (s.passes + revisits) * n_sets - a
        return max(0, math.ceil(dist / p))

    def dram_elems(self, s: OperandStream) -> int:
        return min(s.elems, self.active) + self.events(s) * self.prefetch

    def dram_cycles(self, s: OperandStream, words_per_cycle: float) -> float:
        per_event = math.ceil(self.prefetch / words_per_cycle) + 1
        return self.events(s) * per_event
