"""Evaluation and short-retraining work scales with the model's MACs (sparsa.metrics.budget), and
`sparsa eval --samples` / `load_dataset(limit=)` override it."""

import json

import pytest
import torch
from typer.testing import CliRunner

from sparsa.cli import app
from sparsa.data import load_dataset
from sparsa.errors import SparsaError
from sparsa.metrics import budget

VIT_B, SWIN_T, VIDEOMAE_B, FIXTURE = 17_563_067_904, 4_490_000_000, 180_000_000_000, 5_000_000


def test_rule_gives_fixtures_everything_and_full_size_models_a_bounded_share():
    assert budget.eval_samples(FIXTURE, available=359) == 359
    assert budget.eval_samples(VIT_B) == 113 and budget.eval_samples(VIDEOMAE_B) == 11
    assert budget.eval_samples(SWIN_T, available=359) == 359
    # dynamic-attention emulation costs ~10x a forward pass; never below the floor
    assert budget.eval_samples(VIT_B, factor=budget.EMULATION_FACTOR) == 11
    assert budget.eval_samples(VIDEOMAE_B, factor=budget.EMULATION_FACTOR) == budget.MIN_SAMPLES
    assert (budget.batch_size(FIXTURE), budget.batch_size(VIT_B), budget.batch_size(VIDEOMAE_B)) == (64, 8, 1)
    assert (budget.latency_runs(FIXTURE), budget.latency_runs(VIT_B), budget.latency_runs(VIDEOMAE_B)) == (20, 11, 3)
    assert budget.train_samples(VIT_B) == 37 and budget.train_batch_size(VIT_B) == 2
    assert budget.warmup_runs(20) == 3 and budget.warmup_runs(3) == 1
    # the MACs a default evaluation spends stay within the budget (above the floor)
    for macs in (VIT_B, SWIN_T, 3e10, 9e10):
        assert budget.eval_samples(macs) * macs <= budget.EVAL_MACS


def test_limit_takes_the_first_samples_of_the_split():
    full = load_dataset("digits", "test")
    part = load_dataset("digits", "test", limit=10)
    assert len(part) == 10 and torch.equal(part.x, full.x[:10]) and torch.equal(part.y, full.y[:10])
    assert len(load_dataset("digits", "test", limit=10_000)) == len(full)
    clips = load_dataset("clips", "calib", limit=7)  # only ceil(7/6) = 2 clips per class are generated
    assert len(clips) == 7 and clips.info["per_class"] == 2
    with pytest.raises(SparsaError, match="positive integer"):
        load_dataset("digits", "test", limit=0)


def test_eval_samples_option_and_default(tmp_path):
    r = CliRunner().invoke(app, ["eval", "tiny-vit", "--samples", "16", "--runs", "1", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["n_samples"] == 16 and d["latency_runs"] == 1
    r = CliRunner().invoke(app, ["eval", "tiny-vit", "--runs", "1", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["n_samples"] == len(load_dataset("digits", "test"))  # a fixture: the whole split
    r = CliRunner().invoke(app, ["eval", "tiny-vit", "--attention", "hdp", "--samples", "8", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["n_samples"] == 8
    r = CliRunner().invoke(app, ["eval", "tiny-vit", "--samples", "0"])
    assert isinstance(r.exception, SparsaError) and "--samples 0 is out of range" in str(r.exception)
