"""Generated video clips: one moving shape per clip; the class is the kind of motion.

Stand-in for a video-recognition set (seed 000 prunes a video transformer). Fully deterministic
from `seed`, needs no download, and hard enough that a single frame cannot tell the class
(every class shares shapes, colours and positions; only the motion over time differs)."""

from __future__ import annotations

import zlib

import numpy as np
import torch

from sparsa.data.dataset import Dataset
from sparsa.data.images import MEAN, STD
from sparsa.data.splits import check_split
from sparsa.errors import SparsaError

CLASSES = ["right", "left", "down", "up", "grow", "shrink"]
NUM_FRAMES = 8
FRAME_SIZE = 32
# clips per class and split: 6 classes x (64 + 20 + 10) = 564 clips in all
PER_CLASS = {"train": 64, "test": 20, "calib": 10}
SHAPES = ("square", "disk", "diamond")


def _split_seed(seed: int, split: str) -> int:
    # distinct, stable generator per (seed, split): the splits never share a clip
    return zlib.crc32(f"sparsa-clips:{seed}:{split}".encode())


def _render(shape: str, cx: np.ndarray, cy: np.ndarray, r: np.ndarray, size: int) -> np.ndarray:
    """[T,H,W] mask of one shape whose centre/radius follow cx, cy, r over time."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx = np.abs(xx[None] - cx[:, None, None])
    dy = np.abs(yy[None] - cy[:, None, None])
    rr = r[:, None, None]
    if shape == "square":
        m = np.maximum(dx, dy) <= rr
    elif shape == "disk":
        m = dx**2 + dy**2 <= rr**2
    else:
        m = dx + dy <= 1.3 * rr
    return m.astype(np.float32)


def make_clip(label: int, rng: np.random.Generator, frames: int = NUM_FRAMES, size: int = FRAME_SIZE) -> np.ndarray:
    """One clip, [T, 3, H, W] in [0, 1]."""
    t = np.arange(frames, dtype=np.float32)
    shape = SHAPES[rng.integers(len(SHAPES))]
    kind = CLASSES[label]
    if kind in ("grow", "shrink"):
        r0, r1 = rng.uniform(2.0, 3.5), rng.uniform(8.0, 10.0)
        if kind == "shrink":
            r0, r1 = r1, r0
        r = r0 + (r1 - r0) * t / (frames - 1)
        cx = np.full(frames, rng.uniform(11, size - 12), np.float32)
        cy = np.full(frames, rng.uniform(11, size - 12), np.float32)
    else:
        r = np.full(frames, rng.uniform(3.0, 5.0), np.float32)
        speed = rng.uniform(1.5, 2.8)
        travel = speed * (frames - 1)
        lo, hi = r[0], size - 1 - r[0]
        along0 = rng.uniform(lo, hi - travel)  # start so the shape stays in the frame
        across = np.full(frames, rng.uniform(lo, hi), np.float32)
        along = along0 + speed * t
        if kind in ("left", "up"):
            along = (lo + hi) - along  # mirror: same track, opposite direction
        cx, cy = (along, across) if kind in ("right", "left") else (across, along)
        cx = cx + rng.normal(0, 0.3, frames)  # small jitter so motion is not perfectly linear
        cy = cy + rng.normal(0, 0.3, frames)
    mask = _render(shape, cx, cy, r, size)  # [T,H,W]
    colour = rng.uniform(0.5, 1.0, 3).astype(np.float32)
    background = rng.uniform(0.0, 0.25, 3).astype(np.float32)
    clip = background[None, :, None, None] + (colour - background)[None, :, None, None] * mask[:, None]
    clip = clip + rng.normal(0, 0.05, clip.shape).astype(np.float32)
    return np.clip(clip, 0.0, 1.0)


def load_clips(split: str, seed: int = 0, frames: int = NUM_FRAMES, size: int = FRAME_SIZE,
               per_class: int | None = None) -> Dataset:
    """`per_class` clips of each class (default PER_CLASS[split]). Any count is drawn from the
    split's own generator, independent of the other splits', so checks that need more clips (a
    tolerance bound shrinks as 1/sqrt(n)) can have them: the generator is unlimited."""
    check_split(split)
    if per_class is not None and (not isinstance(per_class, int) or per_class < 1):
        raise SparsaError(f"per_class must be a positive integer, got {per_class!r}",
                          hint="e.g. per_class=200 for 1200 clips")
    rng = np.random.default_rng(_split_seed(seed, split))
    n = PER_CLASS[split] if per_class is None else per_class
    labels = np.repeat(np.arange(len(CLASSES)), n)
    labels = labels[rng.permutation(len(labels))]
    clips = np.stack([make_clip(int(c), rng, frames, size) for c in labels])
    x = (torch.from_numpy(clips) - MEAN) / STD  # [N,T,3,H,W]
    return Dataset(
        kind="video", name="clips", split=split, x=x.contiguous(), y=torch.from_numpy(labels.astype(np.int64)),
        class_names=list(CLASSES),
        info={"source": "generated", "seed": seed, "frames": frames, "size": size, "per_class": n,
              "normalize": {"mean": MEAN, "std": STD}},
    )
