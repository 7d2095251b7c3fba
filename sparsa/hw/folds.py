"""The folds (array tiles) one GEMM runs, kept as a histogram of per-fold cycle counts.

A dense GEMM has one fold length for all of its folds, a masked one a few (one per distinct
streamed length), so the simulator stores each distinct length once with how many folds take it:
memory grows with the number of distinct lengths, never with the number of folds (a 1 x 1 x 4e10
GEMM has 5e9 identical folds). Every figure the simulator needs is a closed-form sum over it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Folds:
    cycles: np.ndarray  # int64: distinct cycle counts of the folds that run (all > 0), ascending
    counts: np.ndarray  # int64: how many folds take each

    @classmethod
    def uniform(cls, cycles: int, n: int) -> "Folds":
        """`n` folds of `cycles` cycles each."""
        if n <= 0 or cycles <= 0:
            return cls.empty()
        return cls(np.array([cycles], dtype=np.int64), np.array([n], dtype=np.int64))

    @classmethod
    def empty(cls) -> "Folds":
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))

    @classmethod
    def of(cls, per_fold: np.ndarray, repeat: int = 1) -> "Folds":
        """Folds from an array of per-fold cycles (0 = skipped), each entry standing for `repeat` folds."""
        f = np.asarray(per_fold, dtype=np.int64).ravel()
        values, counts = np.unique(f[f > 0], return_counts=True)
        if repeat <= 0:
            return cls.empty()
        return cls(values.astype(np.int64), counts.astype(np.int64) * int(repeat))

    @property
    def n(self) -> int:
        """Folds that run."""
        return int(self.counts.sum())

    @property
    def total(self) -> int:
        """Cycles of all folds run one after another."""
        return int(np.dot(self.cycles, self.counts)) if self.cycles.size else 0

    def split_cores(self, cores: int) -> int:
        """Cycles when the independent folds are spread over `cores` identical cores."""
        if self.cycles.size == 0:
            return 0
        if cores == 1:
            return self.total
        if self.cycles.size == 1:  # all alike: whole rounds of `cores` folds
            return -(-self.n // cores) * int(self.cycles[0])
        return max(-(-self.total // cores), int(self.cycles.max()))
