"""`sparsa info | prune | eval` on the real MiniLM, and their errors on bad input."""

import json
import sys

import pytest
from typer.testing import CliRunner

import sparsa.cli  # noqa: F401  registers the command modules
from sparsa.cli.app import app
from sparsa.errors import SparsaError

runner = CliRunner()


def _json(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_prune_info_eval_minilm(tmp_path):
    out = tmp_path / "D"
    r = _json(runner.invoke(app, ["prune", "minilm", "--heads", "0.5", "--ffn", "0.5", "--out", str(out), "--json"]))
    assert r["heads_per_layer"] == [6] * 6 and r["ffn_per_layer"] == [768] * 6
    info = _json(runner.invoke(app, ["info", str(out), "--json"]))
    dense = 10_795_392  # MiniLM encoder parameters (embedding tables excluded)
    assert 0.45 < info["params_encoder"] / dense < 0.55
    assert 0.45 < info["macs"] / 1_434_599_424 < 0.55  # 1.4346 GMAC dense at seq 128
    assert info["family"] == "bert" and info["source"] == "minilm" and info["stages"] == ["prune"]
    texts = tmp_path / "texts.txt"
    texts.write_text("A short sentence about the weather.\n\nThe train was late again this morning.\n")
    ev = _json(runner.invoke(app, ["eval", str(out), "--reference", "minilm", "--data", str(texts), "--json",
                                   "--runs", "1", "--seq-len", "32"]))
    assert 0.0 < ev["cosine_mean"] < 1.0 and ev["n_texts"] == 2
    assert 0.4 < ev["macs_ratio"] < 0.55
    assert ev["latency_ms"] > 0 and ev["reference_latency_ms"] > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["prune", "minilm", "--heads", "1.0", "--out", "X"], "out of range"),
        (["prune", "minilm", "--ffn", "-0.2", "--out", "X"], "out of range"),
        (["prune", "minilm", "--heads", "0.5", "--importance", "nope", "--out", "X"], "unknown importance"),
        (["info", "/no/such/model"], "no model named"),
        (["prune", "minilm", "--tolerance", "0.02", "--out", "X"], "needs --data"),
        (["eval", "minilm", "--attention", "topk", "--head-ratio", "0.2"], "calibrates HDP"),
        (["eval", "minilm", "--attention", "hdp", "--head-ratio", "0.2", "--tau-h", "3"], "not both"),
        (["eval", "minilm", "--attention", "hdp", "--head-ratio", "1.5"], "out of range"),
        (["train", "tiny-cnn", "--epochs", "0", "--out", "X"], "--epochs 0 is out of range"),
        (["eval", "tiny-vit", "--data", "sentences"], "is text, but the model classifies image"),
        (["eval", "minilm", "--data", "digits"], "is image data, but the model is a text model"),
    ],
)
def test_bad_input_is_a_sparsa_error(args, message):
    r = runner.invoke(app, args)
    assert isinstance(r.exception, SparsaError) and message in str(r.exception)


def test_text_model_without_reference(tmp_path):
    from sparsa.models.tiny import tiny_model

    lm = tiny_model("bert")
    lm.record = {"stages": []}
    d = lm.save(tmp_path / "bert")
    r = runner.invoke(app, ["eval", str(d), "--json"])
    assert isinstance(r.exception, SparsaError) and "--reference" in r.exception.hint


def test_main_exits_2_with_message(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["sparsa", "info", "/no/such/model"])
    with pytest.raises(SystemExit) as e:
        sparsa.cli.main()
    assert e.value.code == 2
    assert "no model named" in capsys.readouterr().err


def test_eval_attention_head_ratio_calibrates_tau_h(tmp_path):
    """--head-ratio R turns into a τ_H calibrated on the calibration split that prunes heads."""
    texts = tmp_path / "texts.txt"
    texts.write_text("The committee met again to review the budget for next year.\n"
                     "Light travels faster than sound, which is why we see lightning first.\n")
    base = ["eval", "minilm", "--attention", "hdp", "--data", str(texts), "--json"]
    none = _json(runner.invoke(app, base))
    some = _json(runner.invoke(app, base + ["--head-ratio", "0.3"]))
    assert none["head_sparsity"] == 0.0
    assert some["tau_h_calibrated"] > 0 and some["head_ratio"] == 0.3
    assert 0.1 < some["head_sparsity"] < 0.6  # about the requested share on other sentences
    assert some["cosine_mean"] < none["cosine_mean"]
