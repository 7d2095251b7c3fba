"""Seed 000's setting on the video fixture: L1 head/FFN pruning of tiny-videomae under a
tolerance, the result saved and reloaded with identical outputs."""

from __future__ import annotations

import pytest
import torch

from sparsa.data import load_dataset


pytestmark = pytest.mark.usefixtures("fast_checkpoints")


def test_videomae_tolerance_pruning_saves_and_reloads(tmp_path):
    from sparsa.metrics import accuracy, count_params
    from sparsa.models import load
    from sparsa.prune.schedule import tolerance_prune

    from sparsa.data.video import load_clips

    dense = load("tiny-videomae")
    data = load_dataset("clips", "calib")  # 60 clips: report and recovery set (test speed)
    check = load_clips("calib", per_class=20)  # a bigger check split from the generator
    r = tolerance_prune(dense, 0.05, {"check": check, "report": data, "train": data}, tmp_path / "v", granularity="structured", scope="global",
                        kinds=("heads", "ffn"), importance="l1_group", delta0=0.25, delta_max=0.5, max_rounds=1,
                        round_recovery_epochs=0, progress=False)
    assert r["compression"] > 0 and r["params"] < r["params_dense"]
    assert r["dense_check_accuracy"] - r["check_accuracy"] <= 0.05 + 1e-9
    back = load(tmp_path / "v")
    assert count_params(back.model) == r["params"]
    assert back.model.config.sparsa_heads_per_layer != [dense.model.config.num_attention_heads] * 3 or \
        back.model.config.sparsa_ffn_per_layer != [dense.model.config.intermediate_size] * 3
    assert abs(accuracy(back, check) - r["check_accuracy"]) < 1e-9
    assert abs(accuracy(back, data) - r["accuracy"]) < 1e-9
    with torch.no_grad():
        x = data.x[:4]
        pruned_now = load(r["model"]).model(pixel_values=x).logits
        assert torch.equal(back.model(pixel_values=x).logits, pruned_now)


def test_data_mapping_must_name_every_role(tmp_path):
    from sparsa.errors import SparsaError
    from sparsa.models import load
    from sparsa.prune.schedule import tolerance_prune

    data = load_dataset("clips", "calib")
    with pytest.raises(SparsaError, match="lacks \\['report'\\]"):
        tolerance_prune(load("tiny-videomae"), 0.05, {"check": data, "train": data}, tmp_path / "v",
                        granularity="structured", kinds=("heads", "ffn"), progress=False)
