"""Deterministic stratified train/test/calib splits shared by the labelled loaders."""

from __future__ import annotations

import numpy as np

from sparsa.errors import SparsaError

SPLITS = ("train", "test", "calib")
# CHOICE: 70/20/10. Reason: the fixtures need most data to train; 20% of digits (360 images)
# resolves accuracy to ~0.3 points; calib is for quantization/sensitivity, never for reporting.
FRACTIONS = {"train": 0.70, "test": 0.20, "calib": 0.10}


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise SparsaError(f"unknown split {split!r}", hint=f"use one of {', '.join(SPLITS)}")
    return split


def stratified_indices(labels: np.ndarray, split: str, seed: int, fractions: dict[str, float] = FRACTIONS) -> np.ndarray:
    """Indices of `split`: each class is shuffled with `seed` and cut by `fractions` (train, test,
    rest calib), so the three splits are disjoint, cover everything and keep the class balance."""
    check_split(split)
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_train = int(round(fractions["train"] * len(idx)))
        n_test = int(round(fractions["test"] * len(idx)))
        cut = {"train": idx[:n_train], "test": idx[n_train : n_train + n_test], "calib": idx[n_train + n_test :]}
        out.append(cut[split])
    sel = np.concatenate(out)
    # interleave classes deterministically (so `subset(n)` of a split stays balanced)
    return sel[np.random.default_rng(seed + 1).permutation(len(sel))]
