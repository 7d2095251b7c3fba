"""The confidence rule of tolerance-driven pruning: a step is accepted only when the one-sided
upper bound of the paired accuracy drop is within tolerance, so it can reject a step whose
measured drop is within tolerance (the seed's point rule would accept it)."""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import pytest
import torch

from sparsa.data import load_dataset
from sparsa.errors import SparsaError
from sparsa.prune.schedule import accuracy_drop

pytestmark = pytest.mark.usefixtures("fast_checkpoints")


def _pair(n: int, b: int, c: int, wrong_both: int = 0):
    """Correctness vectors with b images only the dense model gets right, c only the pruned one."""
    dense = torch.ones(n, dtype=torch.bool)
    pruned = torch.ones(n, dtype=torch.bool)
    pruned[:b] = False
    dense[b : b + c] = False
    dense[b + c : b + c + wrong_both] = False
    pruned[b + c : b + c + wrong_both] = False
    return dense, pruned


def test_bound_rejects_a_drop_whose_point_estimate_is_within_tolerance():
    dense, pruned = _pair(180, b=1, c=0, wrong_both=5)  # one image lost out of 180: 0.56 points
    point = accuracy_drop(dense, pruned, 0.01, accept="point")
    bound = accuracy_drop(dense, pruned, 0.01, accept="upper_bound", confidence=0.95)
    assert point["drop"] == bound["drop"] == pytest.approx(1 / 180)
    se = math.sqrt((1 - 180 * (1 / 180) ** 2) / 179 / 180)
    assert bound["se"] == pytest.approx(se)
    assert bound["upper"] == pytest.approx(1 / 180 + NormalDist().inv_cdf(0.95) * se)
    assert point["ok"] and not bound["ok"] and bound["upper"] > 0.01
    # the bound tightens with the sample: the same 0.56-point drop on 1800 images passes
    assert accuracy_drop(*_pair(1800, b=10, c=0), 0.01)["ok"]


def test_paired_counts_and_edge_cases():
    v = accuracy_drop(*_pair(100, b=3, c=2, wrong_both=4), 0.05)
    assert (v["b"], v["c"], v["n"]) == (3, 2, 100) and v["drop"] == pytest.approx(0.01)
    same = accuracy_drop(*_pair(50, 0, 0, 7), 0.001)  # identical predictions: no drop, no spread
    assert same["drop"] == same["se"] == 0 and same["ok"]
    gain = accuracy_drop(*_pair(50, 0, 3), 0.001)  # the pruned model is better: accepted
    assert gain["drop"] < 0 and gain["ok"]
    assert accuracy_drop(*_pair(50, 1, 0), 0.03, confidence=0.5)["upper"] == pytest.approx(1 / 50)
    with pytest.raises(SparsaError, match="same non-empty images"):
        accuracy_drop(torch.ones(3, dtype=torch.bool), torch.ones(4, dtype=torch.bool), 0.1)
    with pytest.raises(SparsaError, match="unknown accept rule"):
        accuracy_drop(torch.ones(3, dtype=torch.bool), torch.ones(3, dtype=torch.bool), 0.1, accept="mean")


@pytest.mark.parametrize("opts, msg", [({"accept": "median"}, "unknown accept rule"),
                                       ({"confidence": 1.0}, "confidence"), ({"confidence": 0.2}, "confidence")])
def test_bad_accept_options(tmp_path, opts, msg):
    from test_schedule_resume import _run, _self_labelled, _tiny_vit

    lm = _tiny_vit()
    with pytest.raises(SparsaError, match=msg):
        _run(lm, 0.1, _self_labelled(lm, 8), tmp_path / "x", opts)


def test_schedule_rejects_steps_the_point_rule_accepts(tmp_path):
    """Same run under both rules (trained tiny-vit, 96 check images, big unstructured steps):
    every decision follows its rule; the bound rejects at least one trial whose measured drop
    was within tolerance, and never prunes further than the point rule."""
    from test_schedule_resume import _run

    from sparsa.models import load

    lm = load("tiny-vit")
    data = load_dataset("digits", "calib").subset(96)
    tol = 0.05
    opts = dict(granularity="unstructured", delta0=0.8, delta_max=0.9, max_rounds=1, round_recovery_epochs=0)
    results, trials = {}, {}
    for rule in ("point", "upper_bound"):
        out = tmp_path / rule
        results[rule] = _run(lm, tol, data, out, {**opts, "accept": rule})
        entries = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
        trials[rule] = [e for e in entries if e["event"] == "trial"]
        key = "accuracy_loss" if rule == "point" else "loss_upper"
        assert all(e["accepted"] == (e[key] <= tol + 1e-12) for e in trials[rule]), rule
    assert all(e["loss_upper"] >= e["accuracy_loss"] - 1e-12 for e in trials["upper_bound"])
    caught = [e for e in trials["upper_bound"] if e["accuracy_loss"] <= tol and not e["accepted"]]
    assert caught, "the bound rule rejected no step the point rule would accept"
    assert all(e["discordant"][0] > e["discordant"][1] for e in caught)
    assert results["upper_bound"]["check_loss_upper"] <= tol + 1e-12
    assert results["upper_bound"]["compression"] < results["point"]["compression"]
    assert results["upper_bound"]["accept"] == "upper_bound"
