"""sparsa.data: built-in sets are deterministic and well split; user folders/files load; bad input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparsa.data import load_dataset
from sparsa.errors import SparsaError


def test_digits_splits_disjoint_cover_and_stratified():
    from sklearn.datasets import load_digits

    raw = load_digits()
    parts = {s: load_dataset("digits", s) for s in ("train", "test", "calib")}
    assert sum(len(d) for d in parts.values()) == len(raw.target)
    for d in parts.values():
        assert d.kind == "image" and d.x.shape[1:] == (3, 32, 32) and d.x.dtype == torch.float32
        assert d.num_classes == 10 and d.y.dtype == torch.int64
        # stratified: every class present in roughly its share
        counts = torch.bincount(d.y, minlength=10).float()
        assert counts.min() >= 0.7 * counts.mean()
    # identical images would mean a split leaks into another
    keys = {s: {tuple(x.flatten()[::7].tolist()) for x in d.x} for s, d in parts.items()}
    assert len(parts["test"].x) == len(keys["test"])
    assert not (keys["train"] & keys["test"]) or len(keys["train"] & keys["test"]) < 3  # raw set has a few duplicates
    # pixels map back to the 0..16 originals: channel 0 of the 4x-upsampled image averages 4x4 blocks
    assert torch.allclose(parts["test"].x[:, 0], parts["test"].x[:, 1])
    assert float(parts["test"].x.min()) >= -1.0 and float(parts["test"].x.max()) <= 1.0


def test_digits_deterministic_and_seeded():
    a, b = load_dataset("digits", "test", seed=0), load_dataset("digits", "test", seed=0)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    c = load_dataset("digits", "test", seed=1)
    assert not torch.equal(a.y, c.y)
    assert load_dataset("digits", "test", image_size=16).x.shape[-1] == 16


def test_clips_per_class_draws_more_clips_and_rejects_bad_counts():
    from sparsa.data.video import load_clips
    from sparsa.errors import SparsaError

    big = load_clips("calib", per_class=15)
    assert torch.bincount(big.y).tolist() == [15] * 6 and big.info["per_class"] == 15
    assert torch.equal(big.x, load_dataset("clips", "calib", per_class=15).x)  # deterministic, same via load_dataset
    test = load_clips("test", per_class=15)  # another split's stream: no clip in common
    assert not any(torch.equal(c, t) for c in big.x[:10] for t in test.x)
    for bad in (0, -3, 2.5):
        with pytest.raises(SparsaError, match="per_class"):
            load_clips("calib", per_class=bad)


def test_clips_deterministic_balanced_and_motion_defined():
    a, b = load_dataset("clips", "test", seed=3), load_dataset("clips", "test", seed=3)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert a.kind == "video" and a.x.shape[1:] == (8, 3, 32, 32)
    assert torch.bincount(a.y).tolist() == [20] * 6
    assert not torch.equal(a.x[:4], load_dataset("clips", "train", seed=3).x[:4])
    assert not torch.equal(a.x, load_dataset("clips", "test", seed=4).x)
    # the class is in the motion: a "right" clip's bright mass moves right, a "left" one's moves left
    ds = load_dataset("clips", "calib")
    for label, sign in ((0, 1), (1, -1)):
        clip = ds.x[ds.y == label][0]  # [T,3,H,W]
        g = clip.mean(1)  # [T,H,W]
        thr = (g.amax((1, 2)) + g.median()) / 2
        m = (g > thr[:, None, None]).float()  # foreground mask per frame
        xs = torch.arange(32.0)
        cx = (m.sum(1) * xs).sum(-1) / m.sum((1, 2))
        assert sign * float(cx[-1] - cx[0]) > 5


def _make_image_folder(root, classes=("cat", "dog"), n=10, size=12):
    from PIL import Image

    rng = np.random.default_rng(0)
    for ci, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for i in range(n):
            arr = (rng.uniform(0, 1, (size, size, 3)) * 60 + ci * 150).astype(np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")
    (root / "README.txt").write_text("not a class")


def test_image_folder_split_and_resize(tmp_path):
    _make_image_folder(tmp_path / "imgs")
    parts = {s: load_dataset(tmp_path / "imgs", s) for s in ("train", "test", "calib")}
    assert [len(parts[s]) for s in ("train", "test", "calib")] == [14, 4, 2]
    d = parts["train"]
    assert d.class_names == ["cat", "dog"] and d.x.shape[1:] == (3, 32, 32)
    # class 1 images are brighter by construction: labels follow folders
    assert float(d.x[d.y == 1].mean()) > float(d.x[d.y == 0].mean()) + 0.5


def test_image_folder_presplit(tmp_path):
    _make_image_folder(tmp_path / "f" / "train", n=3)
    _make_image_folder(tmp_path / "f" / "test", n=2)
    assert len(load_dataset(tmp_path / "f", "test")) == 4
    with pytest.raises(SparsaError, match="no 'calib'"):
        load_dataset(tmp_path / "f", "calib")


def test_text_file_and_errors(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("First sentence.\n\n  Second one.  \n")
    d = load_dataset(p, "test")
    assert d.kind == "text" and d.texts == ["First sentence.", "Second one."]
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(SparsaError, match="no sentences"):
        load_dataset(tmp_path / "empty.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(SparsaError, match="not UTF-8"):
        load_dataset(tmp_path / "bin.txt")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(SparsaError, match="no images"):
        load_dataset(tmp_path / "emptydir")


def test_bad_names_splits_options(tmp_path):
    with pytest.raises(SparsaError, match="no data set named"):
        load_dataset(tmp_path / "missing")
    with pytest.raises(SparsaError, match="unknown split"):
        load_dataset("digits", "valid")
    with pytest.raises(SparsaError, match="unknown load_dataset option"):
        load_dataset("digits", "test", colour=True)


def test_sentences_are_evaluation_only():
    from sparsa.data.text import EVAL_SENTENCES

    d = load_dataset("sentences")
    assert d.kind == "text" and d.texts == list(EVAL_SENTENCES)
    with pytest.raises(SparsaError, match="evaluation-only"):
        load_dataset("sentences", "train")


def test_corpus_builder_dedupes_and_excludes_eval(tmp_path):
    from sparsa.data.corpus import build_corpus, split_of

    src = tmp_path / "mod.py"
    src.write_text('''"""Module docstring with a reasonably long first sentence here. Second sentence is also long enough."""

def f():
    """Return the parsed configuration for the current user.

    >>> f()  # code is skipped
    Return the parsed configuration for the current user.
    """

def g():
    """Return the parsed configuration for the current user."""

def h():
    """The quick brown fox jumps over the lazy dog."""
''')
    got = build_corpus([tmp_path], exclude=["the quick brown fox jumps over the lazy dog"])
    assert got == ["Module docstring with a reasonably long first sentence here.",
                   "Second sentence is also long enough.",
                   "Return the parsed configuration for the current user."]
    assert all(split_of(s) == split_of(s.upper()) for s in got)  # split keyed by normalised text


def test_hf_save_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    imgs = [Image.fromarray(np.full((8, 8, 3), 40 * (i % 2), np.uint8)) for i in range(20)]
    ds = datasets.Dataset.from_dict({"image": imgs, "label": [i % 2 for i in range(20)]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "label": datasets.ClassLabel(names=["a", "b"])}))
    ds.save_to_disk(str(tmp_path / "img"))
    d = load_dataset(tmp_path / "img", "test")
    assert d.kind == "image" and d.class_names == ["a", "b"] and len(d) == 4 and d.x.shape[1:] == (3, 32, 32)
    assert torch.all((d.x.mean((1, 2, 3)) > -0.9) == (d.y == 1))
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a b", "c d"]}),
                               "validation": datasets.Dataset.from_dict({"text": ["held out."]})})
    dd.save_to_disk(str(tmp_path / "txt"))
    assert load_dataset(tmp_path / "txt", "test").texts == ["held out."]
    assert load_dataset(tmp_path / "txt", "train").texts == ["a b", "c d"]
