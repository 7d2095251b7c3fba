"""A Hugging Face `datasets.save_to_disk` folder (Dataset or DatasetDict)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sparsa.data.dataset import Dataset
from sparsa.data.model_input import InputFormat
from sparsa.data.splits import check_split, stratified_indices
from sparsa.errors import SparsaError

_TEXT_COLUMNS = ("text", "sentence", "sentence1", "content", "document")
_IMAGE_COLUMNS = ("image", "img", "pixel_values")
_LABEL_COLUMNS = ("label", "labels", "fine_label", "target")
# what to read when the split asked for is not in a DatasetDict
_SPLIT_ALIASES = {"test": ("test", "validation", "valid", "val"), "calib": ("calib", "validation", "train"),
                  "train": ("train",)}


def is_hf_disk(path: Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in ("dataset_dict.json", "state.json", "dataset_info.json"))


def load_hf_disk(path: Path, split: str, seed: int = 0, fmt: InputFormat = InputFormat()) -> Dataset:
    check_split(split)
    try:
        import datasets as hfds
    except ImportError:
        raise SparsaError(f"{path} is a Hugging Face `datasets` folder, but the `datasets` package is not installed",
                          hint="pip install datasets") from None
    obj = hfds.load_from_disk(str(path))
    presplit = isinstance(obj, hfds.DatasetDict)
    if presplit:
        name = next((s for s in _SPLIT_ALIASES[split] if s in obj), None)
        if name is None:
            raise SparsaError(f"{path} has splits {list(obj)}; none serves {split!r}",
                              hint=f"save a {split!r} split, or one of {_SPLIT_ALIASES[split]}")
        ds = obj[name]
    else:
        ds = obj
    cols = ds.column_names
    text_col = next((c for c in _TEXT_COLUMNS if c in cols), None)
    image_col = next((c for c in _IMAGE_COLUMNS if c in cols), None)
    label_col = next((c for c in _LABEL_COLUMNS if c in cols), None)
    if image_col is not None:
        if label_col is None:
            raise SparsaError(f"{path}: image column {image_col!r} but no label column",
                              hint=f"add one of the columns {_LABEL_COLUMNS}")
        labels = np.asarray(ds[label_col], dtype=np.int64)
        idx = np.arange(len(labels)) if presplit else stratified_indices(labels, split, seed)
        fmt.check_bytes(len(idx), str(path))
        x = torch.stack([fmt.to_model(_image_tensor(ds[int(i)][image_col]).unsqueeze(0))[0] for i in idx])
        feat = ds.features.get(label_col)
        names = list(getattr(feat, "names", None) or [str(i) for i in range(int(labels.max()) + 1)])
        return Dataset(kind="image", name=str(path), split=split, x=x, y=torch.from_numpy(labels[idx]),
                       class_names=names, info={"source": "hf_save_to_disk", "seed": seed, "presplit": presplit, **fmt.info()})
    if text_col is not None:
        texts = [str(t) for t in ds[text_col]]
        if not presplit:
            from sparsa.data.corpus import split_of

            texts = [t for t in texts if split_of(t) == split] if split != "test" or len(texts) > 20 else texts
        return Dataset(kind="text", name=str(path), split=split, texts=texts,
                       info={"source": "hf_save_to_disk", "column": text_col, "presplit": presplit})
    raise SparsaError(f"{path}: no column sparsa can read (columns: {cols})",
                      hint=f"text sets need one of {_TEXT_COLUMNS}; image sets one of {_IMAGE_COLUMNS} plus a label")


def _image_tensor(img) -> torch.Tensor:
    """PIL image / array / nested list -> [C,H,W] float in [0,1]."""
    arr = np.asarray(img.convert("RGB") if hasattr(img, "convert") else img, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[-1] not in (1, 3) and arr.shape[0] in (1, 3):  # already channels-first
        arr = np.moveaxis(arr, 0, -1)
    if arr.max() > 1.0:
        arr = arr / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
