"""Generated video clips: one moving shape per clip; the class is the kind of motion.

Stand-in for a video-recognition set (seed 000 prunes a video transformer). Fully deterministic
from `seed`, needs no download, and hard enough that a single frame cannot tell the class
(every class shares shapes, colours and positions; only the motion over time differs)."""

from __future__ import annotations

import zlib

import numpy as np
import torch

from sparsa.data.dataset import Dataset
from sparsa.data.model_input import NUM_FRAMES, InputFormat
from sparsa.data.splits import check_split
from sparsa.errors import SparsaError

CLASSES = ["right", "left", "down", "up", "grow", "shrink"]
FRAME_SIZE = 32  # the geometry below is stated at 32 px and 8 frames; other sizes scale it
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
    """One clip, [T, 3, H, W] in [0, 1]. Shapes, positions and speeds scale with `size` and the
    speed with the clip length, so every size and length shows the same motion over the clip
    (at 32 px and 8 frames the scales are 1 and the draws are the fixtures' own)."""
    if frames < 2:
        raise SparsaError(f"a clip needs at least 2 frames to show motion, got {frames}", hint="--frames 2 or more")
    t = np.arange(frames, dtype=np.float32)
    s = size / FRAME_SIZE
    per_frame = (NUM_FRAMES - 1) / (frames - 1)  # the same travel over the whole clip
    shape = SHAPES[rng.integers(len(SHAPES))]
    kind = CLASSES[label]
    if kind in ("grow", "shrink"):
        r0, r1 = rng.uniform(2.0, 3.5) * s, rng.uniform(8.0, 10.0) * s
        if kind == "shrink":
            r0, r1 = r1, r0
        r = r0 + (r1 - r0) * t / (frames - 1)
        cx = np.full(frames, rng.uniform(11 * s, size - 12 * s), np.float32)
        cy = np.full(frames, rng.uniform(11 * s, size - 12 * s), np.float32)
    else:
        r = np.full(frames, rng.uniform(3.0, 5.0) * s, np.float32)
        speed = rng.uniform(1.5, 2.8) * s * per_frame
        travel = speed * (frames - 1)
        lo, hi = r[0], size - 1 - r[0]
        along0 = rng.uniform(lo, hi - travel)  # start so the shape stays in the frame
        across = np.full(frames, rng.uniform(lo, hi), np.float32)
        along = along0 + speed * t
        if kind in ("left", "up"):
            along = (lo + hi) - along  # mirror: same track, opposite direction
        cx, cy = (along, across) if kind in ("right", "left") else (across, along)
        cx = cx + rng.normal(0, 0.3 * s, frames)  # small jitter so motion is not perfectly linear
        cy = cy + rng.normal(0, 0.3 * s, frames)
    mask = _render(shape, cx, cy, r, size)  # [T,H,W]
    colour = rng.uniform(0.5, 1.0, 3).astype(np.float32)
    background = rng.uniform(0.0, 0.25, 3).astype(np.float32)
    clip = background[None, :, None, None] + (colour - background)[None, :, None, None] * mask[:, None]
    clip = clip + rng.normal(0, 0.05, clip.shape).astype(np.float32)
    return np.clip(clip, 0.0, 1.0)


def load_clips(split: str, seed: int = 0, frames: int | None = None, size: int | None = None,
               per_class: int | None = None, fmt: InputFormat | None = None) -> Dataset:
    """`per_class` clips of each class (default PER_CLASS[split]) in `fmt` (the model's frames, size,
    channels, normalisation and layout; `frames` / `size` override it). Any count is drawn from the
    split's own generator, independent of the other splits', so checks that need more clips (a
    tolerance bound shrinks as 1/sqrt(n)) can have them: the generator is unlimited."""
    from sparsa.data.model_input import check_format

    check_split(split)
    if per_class is not None and (isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1):
        raise SparsaError(f"per_class must be a positive integer, got {per_class!r}",
                          hint="e.g. per_class=200 for 1200 clips")
    fmt = fmt or InputFormat()
    if frames is not None or size is not None:
        fmt = check_format(image_size=size or fmt.size, frames=frames or fmt.frames, channels=fmt.channels,
                           mean=fmt.mean, std=fmt.std, tubelet=fmt.tubelet, layout=fmt.layout)
    rng = np.random.default_rng(_split_seed(seed, split))
    n = PER_CLASS[split] if per_class is None else per_class
    labels = np.repeat(np.arange(len(CLASSES)), n)
    labels = labels[rng.permutation(len(labels))]
    fmt.check_bytes(len(labels), "clips", video=True)
    h, w = fmt.size
    side = max(h, w)  # drawn square, then fitted to a non-square input
    t = fmt.frames
    # filled in place, one clip at a time: no list of clips beside the stacked tensor
    x = torch.empty((len(labels), t, fmt.channels, h, w), dtype=torch.float32)
    for i, c in enumerate(labels):
        x[i] = fmt.to_model(torch.from_numpy(make_clip(int(c), rng, t, side)))
    if fmt.layout == "CTHW":  # Conv3d nets take [C, T, H, W] per clip
        x = x.permute(0, 2, 1, 3, 4).contiguous()
    return Dataset(
        kind="video", name="clips", split=split, x=x, y=torch.from_numpy(labels.astype(np.int64)),
        class_names=list(CLASSES),
        info={"source": "generated", "seed": seed, "per_class": n, **fmt.info(video=True)},
    )
