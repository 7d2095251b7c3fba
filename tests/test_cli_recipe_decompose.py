"""`sparsa decompose` and a recipe's `decompose` stage with the same settings run the same PENNI flow
(`flow.run_penni` with the same PenniConfig on the same data) and give the same figures.

tiny-cnn on digits with one retraining epoch: both paths seed torch identically and run the same float
ops in the same process, so accuracy, the chosen threshold scale and the MACs agree exactly.
`tolerance` is a fraction on both doors (0.05 = five accuracy points)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import sparsa.cli  # noqa: F401  registers the command modules
from sparsa.cli.app import app

runner = CliRunner()


def _json(result) -> dict:
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # two PENNI runs of one retraining epoch each (~10-30 s on two shared cores)
def test_cli_decompose_equals_recipe(tmp_path):
    from sparsa.pipeline import run_recipe
    from sparsa.recipe import parse_recipe

    settings = {"basis": 4, "retrain_epochs": 1, "finetune_epochs": 0, "tolerance": 0.05, "shrink": "none"}
    flags = [a for k, v in settings.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    cli = _json(runner.invoke(app, ["decompose", "tiny-cnn", *flags, "--seed", "0", "--out", str(tmp_path / "d"),
                                    "--json"]))
    recipe = {"name": "penni-chain", "model": "tiny-cnn", "seed": 0, "data": {"train": "digits", "seed": 0},
              "stages": [{"type": "decompose", **settings}],
              "evaluation": {"per_stage": False, "latency": None}}
    res = run_recipe(parse_recipe(json.dumps(recipe), source="chain.yaml"), tmp_path / "r", quiet=True, html=False)
    rec = res["stages"][-1]["record"]

    assert rec["config"]["tolerance"] == 0.05 and rec["tolerance"] == 0.05  # a fraction, not points
    # the tolerance rule picked s on the calibration split: both doors pick the same
    assert rec["s"] == cli["s"]
    assert rec["penni"]["accuracy"] == cli["accuracy_penni"]
    assert rec["original"]["accuracy"] == cli["accuracy_original"]
    assert rec["penni"]["macs"]["penni"] == cli["macs_penni"]
    assert rec["coefficient_sparsity"]["sparsity"] == pytest.approx(cli["coefficient_sparsity"], abs=0)


def test_tolerance_is_a_fraction_of_accuracy(monkeypatch):
    """choose_s keeps the largest s whose pruned accuracy is within `tolerance` (a fraction) of the target:
    read as points, 0.06 would accept nothing below 0.9494 and walk on past the second s."""
    from torch import nn

    from sparsa.decompose import flow

    accs = iter([0.80, 0.89, 0.95])  # what each tried s measures, largest s first
    monkeypatch.setattr(flow, "accuracy", lambda m, data: next(accs))
    monkeypatch.setattr(flow, "prune_coefficients", lambda m, s: None)
    s, tried = flow.choose_s(nn.Sequential(nn.Conv2d(1, 4, 3)), None, target=0.95, tolerance=0.06)
    assert s == flow.S_GRID[1] and [t["calib_accuracy"] for t in tried] == [0.80, 0.89]
