"""Image sets: scikit-learn's bundled digits (the fixtures' stand-in for ImageNet) and a user's
`class_name/*.png` folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sparsa.data.dataset import Dataset
from sparsa.data.model_input import InputFormat
from sparsa.data.splits import check_split, stratified_indices
from sparsa.errors import SparsaError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def load_digits(split: str, seed: int = 0, fmt: InputFormat = InputFormat()) -> Dataset:
    from sklearn.datasets import load_digits as _sk_digits

    check_split(split)
    bunch = _sk_digits()
    labels = bunch.target.astype(np.int64)
    idx = stratified_indices(labels, split, seed)
    fmt.check_bytes(len(idx), "digits")
    x = torch.from_numpy(bunch.images[idx].astype(np.float32) / 16.0).unsqueeze(1)  # [N,1,8,8]
    return Dataset(
        kind="image", name="digits", split=split,
        x=fmt.to_model(x), y=torch.from_numpy(labels[idx]),
        class_names=[str(i) for i in range(10)],
        info={"source": "sklearn.datasets.load_digits", "seed": seed, "native_size": [8, 8], **fmt.info()},
    )


def load_image_folder(root: Path, split: str, seed: int = 0, fmt: InputFormat = InputFormat()) -> Dataset:
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
    fmt.check_bytes(len(idx), str(root))
    h, w = fmt.size
    xs, bad, sizes = [], [], set()
    for i in idx:
        try:
            with Image.open(files[i]) as im:
                sizes.add(im.size)
                im = im.convert("RGB" if fmt.channels == 3 else "L").resize((w, h), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.float32).reshape(h, w, fmt.channels) / 255.0
                xs.append(torch.from_numpy(arr).permute(2, 0, 1))
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
        x=fmt.to_model(x), y=torch.from_numpy(labels[idx]), class_names=classes,
        info={"source": "image_folder", "seed": seed, "presplit": presplit, **fmt.info(),
              # the result says when images were resized (and from what)
              "resized_from": sorted([hw[1], hw[0]] for hw in sizes if hw != (w, h))[:10]},
    )
