"""`sparsa sim` on bad and oversized input: every numeric option validated, honoured or refused;
sizes checked before any work (model position limits, memory for recorded masks); presets and
shape files with non-finite, unbounded or unknown fields refused naming them."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from sparsa.cli import app
from sparsa.errors import SparsaError
from sparsa.hw import mask_budget
from sparsa.hw.arch import load_arch
from sparsa.hw.shape_spec import parse_shape_spec, read_shape_spec

runner = CliRunner()


def _sim(*args):
    res = runner.invoke(app, ["sim", *args])
    return res, res.exception


@pytest.fixture
def as_model(monkeypatch):
    """`sparsa sim NAME` loads the given LoadedModel instead of reading NAME."""
    import sparsa.models

    def use(loaded):
        monkeypatch.setattr(sparsa.models, "load", lambda name, *a, **k: loaded)
    return use


@pytest.mark.parametrize("text,part", [("1,1,1.5", "N='1.5'"), ("1,nan,1", "K='nan'"), ("-1,1,1", "M='-1'"),
                                       ("1,0,1", "K='0'"), ("1,inf,1", "K='inf'"), ("1,1e3,1", "K='1e3'"),
                                       ("1,2", "not M,K,N"), ("1," + "9" * 5000 + ",1", "not a positive integer")])
def test_gemm_strings_refused(text, part):
    _, e = _sim("--gemm", text, "--arch", "hdp-server")
    assert isinstance(e, SparsaError) and part in e.message


def test_gemm_past_64_bit_counters_refused():
    _, e = _sim("--gemm", "99999999999,99999999999,99999999999", "--arch", "hdp-server")
    assert isinstance(e, SparsaError) and "64-bit counters" in e.message


def test_huge_gemm_runs_in_closed_form():
    # 1.25e11 identical folds: one histogram entry (a per-fold array would need 1 TB)
    res, _ = _sim("--gemm", "1,1,1000000000000", "--arch", "hdp-server", "--json")
    out = json.loads(res.stdout)
    assert out["folds"] == 10**12 // 8 and out["cycles"] >= out["folds"] // 8 * out["per_fold_cycles"]


@pytest.mark.parametrize("opt", ["--batch", "--seq-len"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_numeric_options_must_be_positive(opt, value):
    _, e = _sim("bert-tiny", "--arch", "hdp-edge", opt, value)
    assert isinstance(e, SparsaError) and f"{opt} {value} must be a positive integer" in e.message
    _, e = _sim("bert-tiny", "--arch", "hdp-edge", opt, "nan")  # not an int at all: typer refuses it (exit 2)
    assert e is None or isinstance(e, SystemExit)


def test_batch_is_honoured_for_shape_workloads_and_gemms(tmp_path):
    one = json.loads(_sim("bert-tiny", "--arch", "hdp-edge", "--seq-len", "16", "--json")[0].stdout)
    four = json.loads(_sim("bert-tiny", "--arch", "hdp-edge", "--seq-len", "16", "--batch", "4", "--json")[0].stdout)
    assert four["workload"]["batch"] == 4 and four["macs"] == 4 * one["macs"]
    f = tmp_path / "w.yaml"
    f.write_text("num_layers: 2\nhidden: 128\nheads: 2\nffn: 512\nseq_len: 16\nbatch: 3\n")
    from_file = json.loads(_sim(str(f), "--arch", "hdp-edge", "--json")[0].stdout)
    assert from_file["workload"]["batch"] == 3 and from_file["macs"] == 3 * one["macs"]
    overridden = json.loads(_sim(str(f), "--arch", "hdp-edge", "--batch", "4", "--json")[0].stdout)
    assert overridden["macs"] == four["macs"]
    g1 = json.loads(_sim("--gemm", "64,64,64", "--arch", "systolic-32-os", "--json")[0].stdout)
    g3 = json.loads(_sim("--gemm", "64,64,64", "--arch", "systolic-32-os", "--batch", "3", "--json")[0].stdout)
    assert g3["batch"] == 3 and g3["folds"] == 3 * g1["folds"]


@pytest.mark.parametrize("args,part", [
    (["--gemm", "4,4,4", "--seq-len", "8"], "--seq-len does not apply"),
    (["--gemm", "4,4,4", "--attention", "hdp"], "--attention does not apply"),
    (["bert-tiny", "--gemm", "4,4,4"], "a model/workload does not apply"),
    (["bert-tiny", "--opt", "gap=3"], "dense attention has none"),
    (["bert-tiny", "--per-op"], "needs --json"),
])
def test_options_that_cannot_apply_are_refused(args, part):
    _, e = _sim(*args, "--arch", "hdp-edge")
    assert isinstance(e, SparsaError) and part in e.message


def test_seq_len_past_the_models_positions_is_refused(tiny_bert, as_model):
    as_model(tiny_bert)  # 128 positions
    for extra in ([], ["--attention", "hdp"]):
        _, e = _sim("tiny", "--arch", "hdp-edge", "--seq-len", "129", *extra)
        assert isinstance(e, SparsaError) and "128 positions" in e.message and "--seq-len 128" in e.hint
    res, e = _sim("tiny", "--arch", "hdp-edge", "--seq-len", "128", "--json")
    assert e is None and json.loads(res.stdout)["workload"]["seq_len"] == 128


def test_seq_len_for_a_vision_model_is_refused(as_model):
    from sparsa.models.tiny import tiny_model

    as_model(tiny_model("vit"))
    _, e = _sim("tiny-vit", "--arch", "hdp-edge", "--seq-len", "64")
    assert isinstance(e, SparsaError) and "applies to text models" in e.message


def test_mask_recording_refused_with_an_estimate_past_available_memory(tiny_bert, as_model, monkeypatch):
    as_model(tiny_bert)
    monkeypatch.setattr(mask_budget, "available_bytes", lambda: 10**8)  # 100 MB
    _, e = _sim("tiny", "--arch", "hdp-edge", "--attention", "hdp", "--seq-len", "128", "--batch", "64")
    # 64 x 4 heads x 128^2 scores: the estimate (>= 200 B/score) is past half of 100 MB
    assert isinstance(e, SparsaError) and "GB" in e.message and "0.1 GB available" in e.message
    # with the memory unknown nothing is refused and the same estimate is reported
    monkeypatch.setattr(mask_budget, "available_bytes", lambda: None)
    p = mask_budget.plan(batch=64, heads=4, tokens=128, layers=2)
    assert p.chunk == 64 and p.estimate_bytes >= mask_budget.SCORE_BYTES * 64 * 4 * 128 * 128 > 0.5 * 10**8


def test_progress_line_names_the_real_token_count(as_model):
    """A vision model's recording line says how many tokens its attention sees (not a text default)."""
    from sparsa.models.tiny import tiny_model

    loaded = tiny_model("vit")
    as_model(loaded)
    res, e = _sim("tiny-vit", "--arch", "hdp-edge", "--attention", "hdp", "--json")
    assert e is None, res.output
    tokens = json.loads(res.stdout)["workload"]["seq_len"]
    assert tokens != 128 and f": {tokens:,} tokens) ..." in res.stderr


def test_mask_estimate_follows_the_recording_form(monkeypatch):
    """Head groups bound what the integer emulation holds; the long-sequence form holds less per score."""
    monkeypatch.setattr(mask_budget, "available_bytes", lambda: None)
    kw = dict(batch=1, heads=12, tokens=1568, layers=12)
    whole, grouped = mask_budget.plan(**kw), mask_budget.plan(**kw, grouped=True)
    fast = mask_budget.plan(**kw, grouped=True, fast=True)
    assert whole.estimate_bytes > grouped.estimate_bytes > fast.estimate_bytes
    assert fast.estimate_bytes < 2e9  # VideoMAE-B: 1.56-1.90 GB peak RSS measured for the whole command


def test_mask_plan_chunks_a_fixed_number_of_scores(monkeypatch):
    monkeypatch.setattr(mask_budget, "available_bytes", lambda: None)  # unknown: no refusal, same chunks
    p = mask_budget.plan(batch=64, heads=12, tokens=512, layers=6)
    assert p.chunk == mask_budget.CHUNK_SCORES // (12 * 512 * 512) and p.chunk < 64
    assert mask_budget.plan(batch=2, heads=12, tokens=128, layers=6).chunk == 2
    assert mask_budget.plan(batch=1, heads=12, tokens=10**5, layers=6).chunk == 1


def test_chunked_masks_concatenate_along_the_batch():
    calls = []

    def fake_collect(loaded, inputs, method, **opts):
        ids = inputs["input_ids"]
        calls.append(ids.shape[0])
        return [{"block_mask": ids[:, None, :, None] > layer, "head_mask": ids[:, :1] > 0, "block_size": 1,
                 "seq_len": ids.shape[1], "valid_len": ids[:, 0], "stats": {"n": ids.shape[0]}} for layer in range(2)]

    ids = torch.arange(5 * 3).reshape(5, 3)
    whole = fake_collect(None, {"input_ids": ids}, "hdp")
    calls.clear()
    parts = mask_budget.collect_masks_chunked(fake_collect, None, {"input_ids": ids}, "hdp", 2)
    assert calls == [2, 2, 1]
    for w, p in zip(whole, parts):
        for key in ("block_mask", "head_mask", "valid_len"):
            assert torch.equal(w[key], p[key])
        assert p["stats"] == [{"n": 2}, {"n": 2}, {"n": 1}]


def test_chunked_recording_on_a_model_keeps_the_batch(tiny_bert, as_model, monkeypatch):
    as_model(tiny_bert)
    monkeypatch.setattr(mask_budget, "CHUNK_SCORES", 1)  # one input per forward
    res, e = _sim("tiny", "--arch", "hdp-edge", "--attention", "hdp", "--seq-len", "32", "--batch", "3", "--json")
    assert e is None, res.output
    out = json.loads(res.stdout)
    assert out["workload"]["batch"] == 3 and out["dense"]["cycles"] > 0


# ---- presets and shape files ---------------------------------------------------------------------


@pytest.mark.parametrize("override,field", [
    ({"clock_hz": float("inf")}, "clock_hz"), ({"clock_hz": float("nan")}, "clock_hz"),
    ({"energy_pj.mac": float("nan")}, "energy_pj.mac"), ({"buffers.ifmap_kb": 1e300}, "buffers.ifmap_kb"),
    ({"dram.bandwidth_bytes_per_cycle": float("inf")}, "dram.bandwidth_bytes_per_cycle"),
    ({"area.fpga": {"lut": float("inf")}}, "area.fpga.lut"), ({"cores": 10**30}, "cores"),
    ({"softmax_unit.elems_per_cycle": 10**30}, "softmax_unit.elems_per_cycle"), ({"name": ""}, "name"),
])
def test_preset_fields_must_be_finite_and_bounded(override, field):
    with pytest.raises(SparsaError) as e:
        load_arch("hdp-edge", **override)
    assert f"{field}:" in e.value.message and len(e.value.message) < 400


def test_infinite_clock_in_a_yaml_preset(tmp_path):
    text = (load_arch.__globals__["PRESET_DIR"] / "hdp-edge.yaml").read_text().replace("clock_hz: 1.0e9", "clock_hz: .inf")
    f = tmp_path / "fast.yaml"
    f.write_text(text)
    with pytest.raises(SparsaError, match="clock_hz: Input should be a finite number"):
        load_arch(str(f))


def test_yaml_alias_bombs_and_deep_nesting_refused(tmp_path):
    bomb = "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    for text, part in ((bomb, "aliases expand"), ("&a [*a]\n", "cycle"),
                       ("[" * 3000 + "]" * 3000, "nests too deeply")):
        f = tmp_path / "x.yaml"
        f.write_text(text)
        with pytest.raises(SparsaError, match=part):
            load_arch(str(f))
        with pytest.raises(SparsaError, match=part):
            read_shape_spec(str(f))


def test_unknown_keys_in_a_shape_file_are_named(tmp_path):
    f = tmp_path / "w.yaml"
    f.write_text("num_layers: 2\nhidden: 64\nheads: 2\nffn: 128\nhiden: 1\n")
    _, e = _sim(str(f), "--arch", "hdp-edge")
    assert isinstance(e, SparsaError) and "unknown key 'hiden'" in e.message and "allowed: " in e.message
    assert "num_layers" in e.message and "head_dim" in e.message
    with pytest.raises(SparsaError, match=r"unknown key 'layers.0.width' \(allowed: hidden, heads, head_dim, ffn\)"):
        parse_shape_spec({"layers": [{"hidden": 8, "heads": 1, "head_dim": 8, "ffn": 8, "width": 3}]}, "w")


@pytest.mark.parametrize("data,part", [
    ({"num_layers": 10**9}, "num_layers"), ({"hidden": -1}, "hidden"), ({"hidden": float("nan")}, "hidden"),
    ({"heads": True}, "heads"), ({"ffn": 1.5}, "ffn"), ({"seq_len": 0}, "seq_len"), ({"batch": "4"}, "batch"),
    ({"hidden": 4, "heads": 8}, "give head_dim"), ({"layers": []}, "layers"), ({"layers": "foo"}, "list of mappings"),
])
def test_shape_fields_validated(data, part):
    with pytest.raises(SparsaError, match=part):
        parse_shape_spec(data, "w.yaml")
