"""The committed fixture models load and score what their result.json says (the cheap check;
the retraining reproduction is `python -m sparsa.fixtures.train all --check`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).resolve().parent.parent / "sparsa" / "fixtures"
# name -> (data set, the floor on test accuracy)
EXPECT = {"tiny-vit": ("digits", 0.95), "tiny-swin": ("digits", 0.95), "mnist-swin": ("mnist", 0.95),
          "tiny-videomae": ("clips", 0.90), "tiny-cnn": ("digits", 0.95)}
HF_CLASSES = {"tiny-vit": "ViTForImageClassification", "tiny-swin": "SwinForImageClassification",
              "mnist-swin": "SwinForImageClassification", "tiny-videomae": "VideoMAEForVideoClassification"}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("name", list(EXPECT))
def test_fixture_accuracy_matches_committed_metrics(name):
    from sparsa.data import load_dataset
    from sparsa.metrics import accuracy
    from sparsa.models import load

    metrics = json.loads((FIXTURES / name / "result.json").read_text())
    data, floor = EXPECT[name]
    lm = load(name)
    acc = accuracy(lm, load_dataset(data, "test"))
    assert abs(acc - metrics["test_accuracy"]) <= 0.01, (acc, metrics["test_accuracy"])
    assert acc >= floor
    if name in HF_CLASSES:
        assert type(lm.model).__name__ == HF_CLASSES[name]
        assert metrics["command"] == f"python -m sparsa.fixtures.train {name}"
    size = sum(f.stat().st_size for f in (FIXTURES / name).iterdir())
    assert size < 2_000_000, f"{name} is {size} bytes: too big to commit"


def test_train_entry_points_reject_unknown_names(capsys):
    from sparsa.cli.train_cmds import train
    from sparsa.errors import SparsaError
    from sparsa.fixtures.train import main

    with pytest.raises(SystemExit):
        main(["tiny-gpt"])
    with pytest.raises(SparsaError, match="unknown fixture"):
        train("tiny-gpt", out=None, epochs=None, json_=True)


def test_train_tiny_cnn_honours_out_and_leaves_the_committed_fixture_alone(tmp_path):
    """`--out` used to be ignored for tiny-cnn: a retrain overwrote the committed fixture."""
    from sparsa.errors import SparsaError
    from sparsa.fixtures.train import main

    committed = (FIXTURES / "tiny-cnn" / "result.json").read_bytes()
    main(["tiny-cnn", "--out", str(tmp_path / "cnn"), "--epochs", "1"])
    assert json.loads((tmp_path / "cnn" / "result.json").read_text())["epochs"] == 1
    assert (tmp_path / "cnn" / "model.safetensors").exists()
    assert (FIXTURES / "tiny-cnn" / "result.json").read_bytes() == committed
    with pytest.raises(SparsaError, match="one fixture"):
        main(["all", "--out", str(tmp_path / "x")])
