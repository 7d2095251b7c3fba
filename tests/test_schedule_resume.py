"""Tolerance-driven pruning: a run killed mid-way resumes from its last accepted step and ends
exactly where an uninterrupted run ends; results save and reload; bad input errors."""

from __future__ import annotations

import json

import pytest
import torch

from sparsa.data import Dataset, load_dataset
from sparsa.errors import SparsaError


def _tiny_vit(seed: int = 0, layers: int = 2):
    from transformers import ViTConfig, ViTForImageClassification

    from sparsa.models import from_module

    torch.manual_seed(seed)
    cfg = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=16, num_hidden_layers=layers,
                    num_attention_heads=4, intermediate_size=32, num_labels=10)
    return from_module(ViTForImageClassification(cfg).eval())


def _self_labelled(lm, n: int = 64) -> Dataset:
    """Digits labelled by the model itself: the dense model scores 100%, pruning can only lose."""
    x = load_dataset("digits", "calib").x[:n]
    with torch.no_grad():
        y = lm.model(pixel_values=x).logits.argmax(-1)
    return Dataset(kind="image", name="self-labelled", split="calib", x=x, y=y, class_names=[str(i) for i in range(10)])


pytestmark = pytest.mark.usefixtures("fast_checkpoints")


class Killed(RuntimeError):
    pass


def _kill_at(step: int):
    def cb(entry):
        if entry["step"] == step:
            raise Killed(f"killed at step {step}")
    return cb


def _trace(out):
    keys = ("event", "step", "round", "slot", "rate", "accepted", "check_accuracy", "nonzero_params")
    return [{k: e.get(k) for k in keys} for e in map(json.loads, (out / "log.jsonl").read_text().splitlines())]


@pytest.mark.parametrize("opts", [
    dict(granularity="unstructured", delta0=0.2, delta_max=0.4, max_rounds=2, round_recovery_epochs=1.0,
         recovery_lr=1e-3, recovery_batch=32),
    dict(granularity="structured", scope="layer", delta0=0.25, delta_max=0.5, max_rounds=2,
         trial_recovery_steps=1, round_recovery_epochs=0.5, recovery_lr=1e-3, recovery_batch=32),
], ids=["unstructured", "structured"])
def test_killed_run_resumes_from_last_accepted_step(tmp_path, opts):
    from sparsa.models import load

    lm = _tiny_vit(layers=1 if opts["granularity"] == "unstructured" else 2)
    data = _self_labelled(lm)
    ref = tmp_path / "ref"
    tolerance = 0.15
    r_full = _run(lm, tolerance, data, ref, opts)
    trace_full = _trace(ref)
    assert r_full["trials"] >= 6, "the run must be long enough to be killed in the middle"

    out = tmp_path / "killed"
    kill_step = trace_full[len(trace_full) // 2]["step"]
    with pytest.raises(Killed):
        _run(lm, tolerance, data, out, opts, callback=_kill_at(kill_step))
    state = json.loads((out / ".run" / "state.json").read_text())
    assert 0 < state["step"] < kill_step and not state["done"]
    # what survived is exactly the uninterrupted run's prefix up to the last committed step
    before = _trace(out)
    assert before == trace_full[: len(before)] and before[-1]["step"] == kill_step
    seen = []
    r_resumed = _run(lm, tolerance, data, out, opts, callback=seen.append)
    assert seen[0]["step"] == state["step"] + 1, "resumed right after the last accepted step"
    assert _trace(out) == trace_full
    for k in ("compression", "accuracy", "check_accuracy", "nonzero_params", "params", "trials", "rounds"):
        assert r_resumed[k] == r_full[k], k
    a, b = load(ref).model.state_dict(), load(out).model.state_dict()  # --out is the model folder
    assert not (out / ".run").exists() and json.loads((out / "result.json").read_text())["trials"] == r_full["trials"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert r_full["compression"] > 0.05
    assert r_full["dense_check_accuracy"] - r_full["check_accuracy"] <= tolerance + 1e-9


def _run(lm, tolerance, data, out, opts, callback=None, overwrite=False):
    from sparsa.prune.schedule import tolerance_prune

    return tolerance_prune(lm, tolerance, data, out, progress=False, callback=callback, overwrite=overwrite, **opts)


def test_structured_global_result_saves_and_reloads(tmp_path):
    from sparsa.models import load
    from sparsa.metrics import count_params

    lm = _tiny_vit(1)
    data = _self_labelled(lm)
    r = _run(lm, 0.2, data, tmp_path / "g", dict(granularity="structured", scope="global", delta0=0.1,
                                                   delta_max=0.3, max_rounds=3, round_recovery_epochs=0))
    back = load(r["model"])
    assert count_params(back.model) == r["params"] < r["params_dense"]
    with torch.no_grad():
        logits = back.model(pixel_values=data.x).logits
    assert abs(float((logits.argmax(-1) == data.y).float().mean()) - r["check_accuracy"]) < 1e-9
    entries = [json.loads(l) for l in (tmp_path / "g" / "log.jsonl").read_text().splitlines()]
    trials = [e for e in entries if e["event"] == "trial"]
    assert trials and all({"rate", "params", "macs", "check_accuracy", "accepted"} <= set(e) for e in trials)
    assert r["macs"] < r["macs_dense"]
    assert lm.model.config.num_attention_heads == 4, "the input model is not changed"


def _same_as_folder(mem, folder, x):
    """The in-memory model is the folder's: equal tensors, eval mode, no hooks or gradients, equal outputs."""
    from sparsa.models import load

    disk = load(folder)
    a, b = mem.model.state_dict(), disk.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not mem.model.training
    for m in mem.model.modules():
        assert not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks), f"hook left on {m}"
    assert all(p.grad is None for p in mem.model.parameters())
    with torch.no_grad():
        assert torch.equal(mem.model(pixel_values=x).logits, disk.model(pixel_values=x).logits)  # bit-identical
    assert mem.record["stages"] == disk.record["stages"]


@pytest.mark.parametrize("opts, kill", [
    (dict(granularity="unstructured", delta0=0.2, delta_max=0.4, max_rounds=2, round_recovery_epochs=0.5,
          recovery_lr=1e-3, recovery_batch=32), False),
    (dict(granularity="unstructured", delta0=0.2, delta_max=0.4, max_rounds=2, round_recovery_epochs=0.5,
          recovery_lr=1e-3, recovery_batch=32), True),
    (dict(granularity="structured", scope="layer", delta0=0.25, delta_max=0.5, max_rounds=1,
          trial_recovery_steps=1, round_recovery_epochs=0.5, recovery_lr=1e-3, recovery_batch=32), False),
], ids=["unstructured", "unstructured-resumed", "structured"])
def test_returned_model_is_the_saved_folder(tmp_path, opts, kill):
    """return_model hands back the accepted model in memory (what the pipeline continues with), exactly
    what the folder holds: recovery fine-tuning leaves no train mode, gradients or hooks behind."""
    from sparsa.prune.schedule import tolerance_prune

    lm = _tiny_vit(layers=1)
    lm.data_size = {"image_size": 32}
    data = _self_labelled(lm)
    out = tmp_path / "m"
    if kill:
        with pytest.raises(Killed):
            _run(lm, 0.15, data, out, opts, callback=_kill_at(3))
    r, mem = tolerance_prune(lm, 0.15, data, out, progress=False, return_model=True, **opts)
    assert r["model"] == str(out) and r["trials"] >= 3
    assert mem.model is not lm.model and mem.data_size == {"image_size": 32}
    _same_as_folder(mem, out, data.x)


@pytest.mark.parametrize("tol", [0, 1, -0.1, 1.5, float("nan")])
def test_bad_tolerance(tmp_path, tol):
    lm = _tiny_vit()
    with pytest.raises(SparsaError, match="tolerance"):
        _run(lm, tol, _self_labelled(lm, 8), tmp_path / "x", {})


def test_bad_data_and_models(tmp_path):
    from transformers import BertConfig, BertModel

    from sparsa.models import from_module

    lm = _tiny_vit()
    with pytest.raises(SparsaError, match="needs a labelled data set"):
        _run(lm, 0.02, None, tmp_path / "a", {})
    with pytest.raises(SparsaError, match="no data set named"):
        _run(lm, 0.02, str(tmp_path / "nope"), tmp_path / "a", {})
    with pytest.raises(SparsaError, match="cannot be evaluated on video"):
        _run(lm, 0.02, "clips", tmp_path / "a", {})
    bert = from_module(BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                            num_attention_heads=2, intermediate_size=32)).eval())
    img = _self_labelled(lm, 8)
    with pytest.raises(SparsaError):
        _run(bert, 0.02, img, tmp_path / "b", {})
    with pytest.raises(SparsaError, match="unknown tolerance_prune option"):
        _run(lm, 0.02, img, tmp_path / "c", {"speed": 3})
    # a folder holding another configuration's run is not silently mixed with this one
    _run(lm, 0.5, img, tmp_path / "d", dict(max_rounds=1, round_recovery_epochs=0))
    with pytest.raises(SparsaError, match="different configuration") as e:
        _run(lm, 0.4, img, tmp_path / "d", dict(max_rounds=1, round_recovery_epochs=0))
    assert "--overwrite" in e.value.hint


def test_finished_or_foreign_folder_needs_overwrite_which_starts_over(tmp_path):
    """Resume is not overwrite: a finished run, or a folder of something else, is refused; with
    overwrite the folder is replaced (nothing of it survives) and the run starts from scratch."""
    lm = _tiny_vit()
    img = _self_labelled(lm, 16)
    opts = dict(max_rounds=1, round_recovery_epochs=0)
    out = tmp_path / "d"
    first = _run(lm, 0.5, img, out, opts)
    with pytest.raises(SparsaError, match="finished tolerance-pruning run") as e:
        _run(lm, 0.5, img, out, opts)
    assert "--overwrite" in e.value.hint
    (out / "stale.txt").write_text("from an earlier command")
    again = _run(lm, 0.5, img, out, opts, overwrite=True)
    assert not (out / "stale.txt").exists() and again["trials"] == first["trials"]
    assert json.loads((out / "log.jsonl").read_text().splitlines()[0])["event"] == "start"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SparsaError, match="holds no tolerance-pruning run"):
        _run(lm, 0.5, img, foreign, opts)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_cli_tolerance_errors(monkeypatch, capsys):
    import sys

    from sparsa.cli import main

    for argv, msg in ((["tiny-vit", "--tolerance", "1.5", "--data", "digits"], "out of range"),
                      (["tiny-vit", "--tolerance", "0.02"], "needs --data"),
                      (["minilm", "--tolerance", "0.02", "--data", "digits"], "cannot be evaluated on image data")):
        monkeypatch.setattr(sys, "argv", ["sparsa", "prune", *argv, "--out", "/nonexistent-dir/x"])
        with pytest.raises(SystemExit) as e:
            main()
        assert e.value.code == 2
        assert msg in capsys.readouterr().err
