"""How much work an evaluation or a short retraining does by default: scaled by the model's cost.

A 32-pixel fixture costs a few MMAC per sample, ViT-B/16 17.6 GMAC, VideoMAE-B (16 x 224²) 180 GMAC.
A fixed sample count is either pointless for the first or tens of minutes for the last, so the
defaults below spend a fixed number of multiply-accumulates instead. They are counted, not timed,
so the same model always gets the same samples on any machine. Every command that uses them takes
an explicit count (`--samples`, `--runs`, `--limit`) that overrides the rule.

CHOICE, the rule (MACs per sample from torch's flop counter on one example input):
- evaluation samples = min(available, max(4, 2e12 / (MACs × cost factor))): about 30–60 CPU s per
  model pass on a 2-core x86 (measured 0.72 CPU s per ViT-B/16 image at batch 8). The cost factor
  is 1 for plain forward passes and 10 for dynamic-attention emulation (measured for HDP on
  ViT-B/16: 7.7 vs 0.72 CPU s per image). Fixtures get their whole test split; ViT-B 113 images,
  VideoMAE-B 11 clips.
- training samples per epoch (short retraining, e.g. PENNI) = max(4, 2e12 / (3 × MACs)), batch
  max(1, 1.5e11 / (3 × MACs)), capped by the configured batch: ViT-B/16 38 images per epoch in
  batches of 2, VideoMAE-B 4 clips one at a time; fixtures keep their whole split and batch.
- batch size = min(64, max(1, 1.5e11 / MACs)): activations (and attention scores, which grow with
  the square of the tokens) stay about as large as a 64-image fixture batch; VideoMAE-B runs one
  clip at a time, ViT-B 8 images.
- timed latency runs = min(20, max(3, 2e11 / MACs)) (ViT-B/16 11, VideoMAE-B 3), warm-up min(3, max(1, runs // 5)).
- progress bars appear when a loop's total exceeds 5e11 MACs (about 10 s of work on 2 cores).
"""

from __future__ import annotations

import math

EVAL_MACS = 2e12
MIN_SAMPLES = 4
BATCH_MACS = 1.5e11
MAX_BATCH = 64
LATENCY_MACS = 2e11
MAX_RUNS = 20
MIN_RUNS = 3
PROGRESS_MACS = 5e11
TRAIN_FACTOR = 3  # a training step: forward, backward and the activations kept for it
EMULATION_FACTOR = 10  # dynamic-attention methods run the scores through an integer/float emulation


def macs_per_sample(lm) -> int:
    """MACs of one sample's forward pass (the model's own example input: one traced forward pass)."""
    from sparsa.metrics.cost import count_macs

    return max(1, count_macs(lm.model, lm.example_inputs(batch=1)))


def eval_samples(macs: int, available: int | None = None, factor: float = 1.0) -> int:
    """Default evaluation sample count for a model of `macs` per sample (see the module's rule)."""
    n = max(MIN_SAMPLES, int(EVAL_MACS // (macs * factor)))
    return n if available is None else min(available, n)


def batch_size(macs: int) -> int:
    return min(MAX_BATCH, max(1, int(BATCH_MACS // macs)))


def train_samples(macs: int) -> int:
    """Training samples per epoch: the evaluation budget at 3x a forward pass's cost (backward ~2x)."""
    return max(MIN_SAMPLES, int(EVAL_MACS // (TRAIN_FACTOR * macs)))


def train_batch_size(macs: int) -> int:
    return max(1, int(BATCH_MACS // (TRAIN_FACTOR * macs)))


def latency_runs(macs: int) -> int:
    return min(MAX_RUNS, max(MIN_RUNS, int(LATENCY_MACS // macs)))


def warmup_runs(runs: int) -> int:
    return min(3, max(1, runs // 5))


def wants_progress(total_macs: float) -> bool:
    return total_macs > PROGRESS_MACS


def per_class_for(n: int, classes: int) -> int:
    """Samples per class so a class-balanced set holds at least `n`."""
    return max(1, math.ceil(n / classes))
