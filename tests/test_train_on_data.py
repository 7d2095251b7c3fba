"""`sparsa train --data DATA --out DIR`: a fixture's architecture trained on any labelled folder or
built-in set, and the clear errors for a set that cannot train a classifier."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import sparsa.cli  # noqa: F401  registers the command modules
from sparsa.cli.app import app
from sparsa.errors import SparsaError

runner = CliRunner()


def _folder(root, per_class: dict[str, int], side: int = 12):
    """class_name/*.png: 'bars' images have a bright row, 'cols' images a bright column."""
    from PIL import Image

    for c, n in per_class.items():
        (root / c).mkdir(parents=True)
        for i in range(n):
            a = np.zeros((side, side, 3), np.uint8)
            if c == "cols":
                a[:, i % side] = 255
            else:
                a[i % side] = 255
            Image.fromarray(a).save(root / c / f"{i}.png")
    return root


def _error(args) -> SparsaError:
    r = runner.invoke(app, args)
    assert isinstance(r.exception, SparsaError), (r.output, r.exception)
    return r.exception


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()  # training pins one thread; give the other tests theirs back
    yield
    torch.set_num_threads(n)


def test_train_on_an_image_folder_writes_a_loadable_classifier_of_its_classes(tmp_path):
    from sparsa.data import load_dataset
    from sparsa.models import load

    data = _folder(tmp_path / "shapes", {"bars": 10, "cols": 10})  # 12 px images, resized to the model's 32
    out = tmp_path / "model"
    r = runner.invoke(app, ["train", "--data", str(data), "--out", str(out), "--epochs", "1", "--json"])
    assert r.exit_code == 0, (r.output, r.exception)
    result = json.loads((out / "result.json").read_text())
    assert result["name"] == "tiny-swin" and result["data"] == str(data) and result["epochs"] == 1
    assert result["train_size"] == 14 and result["test_size"] == 4  # 70/20 of 10 per class
    assert result["command"] == f"sparsa train tiny-swin --data {data}"
    lm = load(out)
    assert type(lm.model).__name__ == "SwinForImageClassification"
    assert lm.model.config.id2label == {0: "bars", 1: "cols"}
    test = load_dataset(data, "test")
    with torch.no_grad():
        assert lm.model(pixel_values=test.x).logits.shape == (4, 2)


def test_train_names_another_architecture_and_refuses_to_replace_a_committed_fixture(tmp_path):
    data = _folder(tmp_path / "shapes", {"bars": 5, "cols": 5})
    out = tmp_path / "vit"
    r = runner.invoke(app, ["train", "tiny-vit", "--data", str(data), "--out", str(out), "--epochs", "1"])
    assert r.exit_code == 0, (r.output, r.exception)
    assert json.loads((out / "config.json").read_text())["architectures"] == ["ViTForImageClassification"]
    assert "--out" in _error(["train", "tiny-swin", "--data", str(data)]).hint
    assert "--out" in _error(["train", "--data", "mnist"]).hint
    assert "tiny-swin" in _error(["train", "tiny-cnn", "--data", str(data), "--out", str(tmp_path / "c")]).hint
    assert "--data" in _error(["train"]).hint


@pytest.mark.parametrize("case, match, hint", [
    ("empty", "no images found", "one sub-folder per class"),
    ("one class", "a classifier needs at least two", "second class"),
    ("unreadable", r"cannot be read as images: .*bars/\d+\.png \(UnidentifiedImageError\)", "remove or replace"),
    ("too few", "too few images to train on .*fewer than 3 images of class bars \\(1\\)", "5 images per class"),
    ("text", "is text without labels, but this fixture classifies images", "image set"),
    ("video for an image model", "is video data", "tiny-videomae"),
])
def test_bad_training_sets_get_a_clear_error_before_any_training(tmp_path, case, match, hint):
    data = {
        "empty": lambda: (tmp_path / "d").mkdir() or tmp_path / "d",
        "one class": lambda: _folder(tmp_path / "d", {"bars": 10}),
        "unreadable": lambda: _folder(tmp_path / "d", {"bars": 10, "cols": 10}),
        "too few": lambda: _folder(tmp_path / "d", {"bars": 2, "cols": 10}),
        "text": lambda: (tmp_path / "d.txt").write_text("one sentence\nanother one\n") and tmp_path / "d.txt",
        "video for an image model": lambda: "clips",
    }[case]()
    if case == "unreadable":
        for f in (data / "bars").iterdir():  # every file broken, so whichever split is loaded hits one
            f.write_bytes(b"not an image")
    name = ["tiny-swin"] if case in ("text", "video for an image model") else []
    e = _error(["train", *name, "--data", str(data), "--out", str(tmp_path / "out")])
    assert re.search(match, str(e)), str(e)
    assert hint in e.hint
    assert not (tmp_path / "out").exists()
