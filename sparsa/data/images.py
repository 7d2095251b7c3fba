"""Image sets: scikit-learn's bundled digits (the fixtures' stand-in for ImageNet) and a user's
`class_name/*.png` folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sparsa.data.dataset import Dataset
from sparsa.data.splits import check_split, stratified_indices
from sparsa.errors import SparsaError

IMAGE_SIZE = 32  # the tiny-vit / tiny-swin fixtures' input size
# CHOICE: pixels in [0,1] normalised with mean 0.5 / std 0.5 (HF ViT's default image processor),
# the same for digits and user folders, so a fixture sees user images the way it was trained.
MEAN, STD = 0.5, 0.5
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def _to_model_input(x01: torch.Tensor, size: int) -> torch.Tensor:
    """[N,C,h,w] in [0,1] -> [N,3,size,size] normalised."""
    if x01.shape[1] == 1:
        x01 = x01.expand(-1, 3, -1, -1)
    if x01.shape[-1] != size or x01.shape[-2] != size:
        x01 = F.interpolate(x01, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return ((x01 - MEAN) / STD).contiguous()


def load_digits(split: str, seed: int = 0, image_size: int = IMAGE_SIZE) -> Dataset:
    from sklearn.datasets import load_digits as _sk_digits

    check_split(split)
    bunch = _sk_digits()
    labels = bunch.target.astype(np.int64)
    idx = stratified_indices(labels, split, seed)
    x = torch.from_numpy(bunch.images[idx].astype(np.float32) / 16.0).unsqueeze(1)  # [N,1,8,8]
    return Dataset(
        kind="image", name="digits", split=split,
        x=_to_model_input(x, image_size), y=torch.from_numpy(labels[idx]),
        class_names=[str(i) for i in range(10)],
        info={"source": "sklearn.datasets.load_digits", "seed": seed, "image_size": image_size,
              "normalize": {"mean": MEAN, "std": STD}},
    )


def load_image_folder(root: Path, split: str, seed: int = 0, image_size: int = IMAGE_SIZE) -> Dataset:
    """`root/class_name/*.png`, or `root/{train,test,calib}/class_name/*.png` when split folders exist."""
    from PIL import Image

    check_split(split)
    split_dirs = [d for d in ("train", "test", "calib") if (root / d).is_dir()]
    base, presplit = (root / split, True) if split_dirs else (root, False)
    if split_dirs and not base.is_dir():
        raise SparsaError(f"image folder {root} has split folders {split_dirs} but no {split!r}",
                          hint=f"add {root / split}/<class_name>/*.png, or ask for one of {split_dirs}")
    classes = sorted(d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    files, labels = [], []
    for ci, c in enumerate(classes):
        for f in sorted((base / c).iterdir()):
            if f.suffix.lower() in IMAGE_EXTS:
                files.append(f)
                labels.append(ci)
    if not files:
        raise SparsaError(f"no images found under {base}",
                          hint="an image folder holds one sub-folder per class: <folder>/<class_name>/*.png")
    labels = np.asarray(labels, dtype=np.int64)
    idx = np.arange(len(files)) if presplit else stratified_indices(labels, split, seed)
    if len(idx) == 0:
        raise SparsaError(f"split {split!r} of {root} is empty ({len(files)} images in all)",
                          hint="add more images per class (the split is 70/20/10 train/test/calib per class)")
    xs, bad = [], []
    for i in idx:
        try:
            with Image.open(files[i]) as im:
                im = im.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
                xs.append(torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1))
        except (OSError, ValueError, Image.DecompressionBombError) as e:  # UnidentifiedImageError is an OSError
            bad.append(f"{files[i]} ({type(e).__name__})")
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise SparsaError(f"{len(bad)} file(s) in image folder {root} cannot be read as images: {shown}",
                          hint="remove or replace the unreadable files (or give them an extension sparsa "
                               f"does not read as an image: {', '.join(sorted(IMAGE_EXTS))} are)")
    x = torch.stack(xs)
    return Dataset(
        kind="image", name=str(root), split=split,
        x=_to_model_input(x, image_size), y=torch.from_numpy(labels[idx]), class_names=classes,
        info={"source": "image_folder", "seed": seed, "image_size": image_size,
              "presplit": presplit, "normalize": {"mean": MEAN, "std": STD}},
    )
