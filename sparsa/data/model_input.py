"""The input format a model takes (size, channels, frames, normalisation), and turning [0, 1] pixels
into it. Loaders build every image and clip through one `InputFormat`, so data comes at the model's
size: the callers pass the model's own description (`LoadedModel.data_options()`) or the user's
`--image-size` / `--frames` override as plain options."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sparsa.errors import SparsaError

# CHOICE: pixels in [0,1] normalised with mean 0.5 / std 0.5 (HF ViT's default image processor) when the
# model states no other: the built-in fixtures were trained so.
MEAN, STD = 0.5, 0.5
IMAGE_SIZE = 32  # the tiny-vit / tiny-swin fixtures' input size
NUM_FRAMES = 8  # the tiny-videomae fixture's clip length
# Bounds that keep a typo from asking for terabytes: 1024 px covers every standard checkpoint
# (ViT-H/14 at 518, BEiT at 512); 256 frames covers long-clip video models (VideoMAE-L takes 16).
MAX_IMAGE_SIZE = 1024
MAX_FRAMES = 256
# one split's tensor at most (float32); a 224² test split of mnist (1,000 images) is 0.6 GB
MAX_SPLIT_BYTES = 6 * 2**30
SIZE_HINT = "pass --image-size N (in a recipe: data: {image_size: N})"
FRAMES_HINT = "pass --frames T (in a recipe: data: {frames: T})"


@dataclass(frozen=True)
class InputFormat:
    """Per-sample layout of the model's pixel input: images `[C, H, W]`, clips `[T, C, H, W]`
    (HF video models; `layout="CTHW"` for Conv3d nets)."""

    size: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE)
    channels: int = 3
    mean: tuple[float, ...] = (MEAN,)
    std: tuple[float, ...] = (STD,)
    frames: int = NUM_FRAMES
    tubelet: int = 1
    layout: str = "TCHW"

    def to_model(self, x01: torch.Tensor) -> torch.Tensor:
        """[N, c, h, w] in [0, 1] -> [N, C, H, W] resized and normalised (c: 1 or 3)."""
        x01 = x01.to(torch.float32)
        if x01.shape[1] != self.channels:
            if x01.shape[1] == 1:
                x01 = x01.expand(-1, self.channels, -1, -1)
            elif self.channels == 1:
                x01 = x01.mean(1, keepdim=True)  # grey for one-channel models
            else:  # check_format only builds 1- or 3-channel formats
                raise SparsaError(f"cannot turn {x01.shape[1]}-channel pixels into {self.channels} channels")
        if tuple(x01.shape[-2:]) != self.size:
            x01 = F.interpolate(x01, size=self.size, mode="bilinear", align_corners=False,
                                antialias=x01.shape[-1] > self.size[1]).clamp(0, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return ((x01 - mean) / std).contiguous()

    def check_bytes(self, n: int, what: str, video: bool = False) -> None:
        per = self.channels * self.size[0] * self.size[1] * (self.frames if video else 1) * 4
        if n * per > MAX_SPLIT_BYTES:
            raise SparsaError(
                f"{what}: {n} samples of {self.describe(video)} would take {n * per / 2**30:.1f} GiB "
                f"(at most {MAX_SPLIT_BYTES / 2**30:.0f} GiB per split)",
                hint="use fewer samples, or " + (FRAMES_HINT + " / " if video else "") + SIZE_HINT + " with a smaller size")

    def describe(self, video: bool = False) -> str:
        h, w = self.size
        return (f"{self.frames}x" if video else "") + f"{self.channels}x{h}x{w}"

    def info(self, video: bool = False) -> dict:
        d = {"image_size": list(self.size), "channels": self.channels,
             "normalize": {"mean": list(self.mean), "std": list(self.std)}}
        if video:
            d.update(frames=self.frames, tubelet=self.tubelet, layout=self.layout)
        return d


def _positive_int(name: str, v, hi: int, hint: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= hi:
        raise SparsaError(f"{name} must be an integer from 1 to {hi}, got {v!r}", hint=hint)
    return v


def check_image_size(v) -> tuple[int, int]:
    """An int N (N x N) or an (H, W) pair, each 1..MAX_IMAGE_SIZE."""
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise SparsaError(f"image_size must be N or (height, width), got {v!r}", hint=SIZE_HINT)
        return (_positive_int("image_size", v[0], MAX_IMAGE_SIZE, SIZE_HINT),
                _positive_int("image_size", v[1], MAX_IMAGE_SIZE, SIZE_HINT))
    n = _positive_int("image_size", v, MAX_IMAGE_SIZE, SIZE_HINT)
    return (n, n)


def _stats(name: str, v, channels: int) -> tuple[float, ...]:
    vals = (v,) if isinstance(v, (int, float)) and not isinstance(v, bool) else tuple(v) if isinstance(v, (list, tuple)) else None
    if not vals or len(vals) not in (1, channels) or not all(
            isinstance(a, (int, float)) and not isinstance(a, bool) and abs(a) < 1e6 for a in vals):
        raise SparsaError(f"image {name} must be one number or {channels} (one per channel), got {v!r}",
                          hint="check image_mean / image_std in the model's preprocessor_config.json")
    if name == "std" and not all(a > 0 for a in vals):
        raise SparsaError(f"image std must be positive, got {v!r}",
                          hint="check image_std in the model's preprocessor_config.json")
    return tuple(float(a) for a in vals)


def check_format(image_size=None, frames=None, channels=None, mean=None, std=None, tubelet=None,
                 layout=None) -> InputFormat:
    """Validate the options and build the format (None: the default)."""
    size = check_image_size(image_size) if image_size is not None else (IMAGE_SIZE, IMAGE_SIZE)
    c = 3 if channels is None else channels
    if c not in (1, 3) or isinstance(c, bool):
        raise SparsaError(f"the model takes {c!r}-channel images; sparsa's image data is grey or RGB",
                          hint="use a model with num_channels 1 or 3")
    t = NUM_FRAMES if frames is None else _positive_int("frames", frames, MAX_FRAMES, FRAMES_HINT)
    tub = 1 if tubelet is None else _positive_int("tubelet", tubelet, MAX_FRAMES, "the model's tubelet_size")
    if t % tub:
        raise SparsaError(f"{t} frames are not a whole number of the model's {tub}-frame tubelets",
                          hint=f"{FRAMES_HINT} with T a multiple of {tub}")
    if layout not in (None, "TCHW", "CTHW"):
        raise SparsaError(f"unknown clip layout {layout!r}", hint="TCHW (Hugging Face video models) or CTHW (Conv3d)")
    m = _stats("mean", MEAN if mean is None else mean, c)
    s = _stats("std", STD if std is None else std, c)
    return InputFormat(size, c, m, s, t, tub, layout or "TCHW")
