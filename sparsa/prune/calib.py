"""Calibration batches for data-driven importance (activation, Taylor)."""

from __future__ import annotations

from typing import Iterator

import torch

from sparsa.errors import SparsaError


def default_calibration(lm):
    """The built-in calibration set for a model's modality (never the evaluation sentences)."""
    from sparsa.data import load_dataset

    name = {"text": "corpus", "image": "digits", "video": "clips"}[lm.modality]
    return load_dataset(name, split="calib", seed=0, model=lm)


def _input_name(lm) -> str:
    f = getattr(lm.adapter, "input_name", None)
    return f() if f else "pixel_values"


def calib_batches(lm, data, n: int = 64, batch_size: int = 16, seq_len: int = 128) -> Iterator[tuple[dict, object, object]]:
    """Yield (model inputs, labels or None, token mask [B, N] or None), at most `n` samples.

    `data`: a sparsa Dataset, a list of texts, a tensor of inputs, or a dict of model inputs.
    """
    if data is None:
        data = default_calibration(lm)
    if isinstance(data, dict):
        yield data, None, data.get("attention_mask")
        return
    texts = data if isinstance(data, list) else getattr(data, "texts", None)
    if texts is not None:
        if lm.tokenizer is None:
            raise SparsaError("text calibration data given for a model without a tokenizer",
                              hint="use image/video data for vision models")
        texts = [t for t in texts if t.strip()][:n]
        if not texts:
            raise SparsaError("the calibration set has no text", hint="give a file with one sentence per line")
        for i in range(0, len(texts), batch_size):
            enc = lm.tokenizer(texts[i : i + batch_size], padding=True, truncation=True, max_length=seq_len,
                               return_tensors="pt")
            yield dict(enc), None, enc["attention_mask"]
        return
    x = data if isinstance(data, torch.Tensor) else getattr(data, "x", None)
    if x is None:
        raise SparsaError(f"cannot use {type(data).__name__} as calibration data",
                          hint="give a Dataset from sparsa.data.load_dataset, a list of texts or a tensor")
    y = getattr(data, "y", None)
    name = _input_name(lm)
    x = x[:n]
    for i in range(0, len(x), batch_size):
        yield {name: x[i : i + batch_size]}, (y[i : i + batch_size] if y is not None else None), None
