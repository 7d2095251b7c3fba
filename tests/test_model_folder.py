"""One model folder format: every command that writes a model writes it at --out, with result.json
inside; the folder loads with `sparsa.models.load` and `sparsa info`, also after it is moved; chaining
commands in a wrong order is refused naming what the folder holds."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sparsa.errors import SparsaError


def _invoke(args):
    import sparsa.cli  # noqa: F401  (registers the command modules and the layer kinds)
    from sparsa.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from sparsa.models.tiny import tiny_model

    d = tmp_path_factory.mktemp("bert") / "bert"
    tiny_model("bert").save(d)
    return d


@pytest.fixture
def fast_tolerance(monkeypatch, fast_checkpoints):
    """The CLI's tolerance run with one round and no recovery training: the folder layout is under test."""
    from sparsa.prune import schedule

    monkeypatch.setattr(schedule, "tolerance_prune", functools.partial(
        schedule.tolerance_prune, max_rounds=1, round_recovery_epochs=0, delta0=0.25, delta_max=0.5))


@pytest.fixture
def fast_train(monkeypatch):
    """`sparsa train tiny-cnn` on 64 samples for one epoch: the folder layout is under test, not the accuracy."""
    from sparsa.fixtures import train_cnn

    full = train_cnn.load_digits
    monkeypatch.setattr(train_cnn, "load_digits", lambda split: full(split).subset(64))


def _run_args(src, out):
    """`sparsa run` of a one-stage recipe that saves its model (at <run folder>/model)."""
    recipe = out.parent.parent / "recipe.yaml"
    recipe.write_text(json.dumps({"name": "folder", "model": str(src), "stages": [{"type": "prune", "heads": 0.5}],
                                  "evaluation": {"quality": False, "latency": None, "seq_len": 32},
                                  "report": {"html": False, "save_model": True}}))
    return ["run", recipe, "--out", out]


COMMANDS = {
    "prune": lambda src, out: ["prune", "tiny-cnn", "--channels", "0.25", "--out", out],
    "prune-tolerance": lambda src, out: ["prune", "tiny-vit", "--tolerance", "0.5", "--data", "digits", "--heads",
                                         "0.5", "--out", out],
    "quantize": lambda src, out: ["quantize", src, "--bits", "4", "--out", out, "--onnx", "--seq-len", "8"],
    "quantize-vit-static": lambda src, out: ["quantize", "tiny-vit", "--activations", "static", "--calib", "digits",
                                             "--calib-samples", "8", "--float-storage", "float16", "--out", out],
    "decompose": lambda src, out: ["decompose", "tiny-cnn", "--retrain-epochs", "0", "--finetune-epochs", "0", "--limit", "32",
                                   "--out", out],
    "decompose-hybrid": lambda src, out: ["decompose", "tiny-cnn", "--retrain-epochs", "0", "--finetune-epochs", "0",
                                          "--hybrid-quant", "--hybrid-epochs", "0", "--limit", "32", "--out", out],
    "train": lambda src, out: ["train", "tiny-cnn", "--epochs", "1", "--out", out],
    "run": _run_args,
}
FIXTURES = {"prune-tolerance": "fast_tolerance", "train": "fast_train"}
MODEL_IN = {"run": "model"}  # where the model folder is inside --out (a run folder also holds results.json)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_commands_out_is_a_movable_model_folder(command, tiny_bert, tmp_path, request):
    from sparsa.models import load

    if command in FIXTURES:
        request.getfixturevalue(FIXTURES[command])
    out = tmp_path / "a" / "out"
    r = _invoke([*COMMANDS[command](tiny_bert, out), "--json"])
    assert r.exit_code == 0, (r.output, r.exception)
    printed = json.loads(r.stdout.strip().splitlines()[-1])
    if command in MODEL_IN:
        printed = json.loads((out / "results.json").read_text())["final"]  # the run's end: what its model holds
    folder = out / MODEL_IN.get(command, "")
    stored = json.loads((folder / "result.json").read_text())
    assert str(tmp_path) not in json.dumps(stored), "the result inside names no path outside the folder"
    assert not any(p.name.startswith(".") for p in folder.iterdir()), "no working state left in the model folder"
    lm = load(folder)
    x = lm.example_inputs(batch=2, seq_len=8)
    with torch.no_grad():
        y = lm.model(**x)[0]
    moved = tmp_path / "b" / "elsewhere"
    moved.parent.mkdir()
    shutil.move(str(out), str(moved))
    assert not out.exists()
    moved = moved / MODEL_IN.get(command, "")
    back = load(moved)
    with torch.no_grad():
        assert torch.equal(back.model(**x)[0], y), "the moved folder computes the same"
    info = _invoke(["info", moved, "--json"])
    assert info.exit_code == 0, (info.output, info.exception)
    assert json.loads(info.stdout.strip().splitlines()[-1])["family"] == lm.family
    for k in ("bytes", "params_after", "params", "accuracy_penni", "layers", "test_accuracy"):
        if k in stored:
            assert stored[k] == printed[k], k
    if command.startswith("quantize"):
        assert "QuantLinear" in {m.sparsa_shape()["type"] for m in back.model.modules() if hasattr(m, "sparsa_shape")}
        assert sum(p.stat().st_size for p in moved.iterdir() if p.suffix == ".safetensors") > 0


def test_quantized_folder_computes_what_the_quantize_command_measured(tiny_bert, tmp_path):
    """The saved quantized model is the in-memory one: same codes, same output, same bytes."""
    from sparsa.models import load
    from sparsa.quant import QuantConfig, quant_size, quantize_

    ref = load(tiny_bert)
    quantize_(ref, QuantConfig(bits=4))
    r = _invoke(["quantize", tiny_bert, "--bits", "4", "--out", tmp_path / "q", "--json"])
    assert r.exit_code == 0, r.output
    back = load(tmp_path / "q")
    x = ref.example_inputs(batch=2, seq_len=8)
    with torch.no_grad():
        assert torch.equal(back.model(**x)[0], ref.model(**x)[0])
    assert quant_size(back)["bytes"] == json.loads((tmp_path / "q" / "result.json").read_text())["bytes"]
    assert back.model._sparsa_quant_config == ref.model._sparsa_quant_config


@pytest.mark.parametrize("first, then, words", [
    (["quantize", "{src}", "--out", "{a}"], ["quantize", "{a}", "--out", "{b}"], "integer-quantized"),
    (["quantize", "{src}", "--out", "{a}"], ["prune", "{a}", "--heads", "0.5", "--out", "{b}"], "integer-quantized"),
    (["decompose", "tiny-cnn", "--retrain-epochs", "0", "--finetune-epochs", "0", "--limit", "16", "--out", "{a}"],
     ["prune", "{a}", "--channels", "0.5", "--out", "{b}"], "PENNI-decomposed"),
])
def test_wrong_order_names_what_the_folder_holds(tiny_bert, tmp_path, first, then, words):
    fill = dict(src=tiny_bert, a=tmp_path / "a", b=tmp_path / "b")
    assert _invoke([a.format(**fill) for a in first]).exit_code == 0
    r = _invoke([a.format(**fill) for a in then])
    assert isinstance(r.exception, SparsaError), r.output
    assert words in r.exception.message and "needs a model with float" in r.exception.message
    assert r.exception.hint and not (tmp_path / "b").exists()


def test_older_quantized_layout_gets_a_re_create_message(tiny_bert, tmp_path):
    from sparsa.models import load
    from sparsa.quant import QuantConfig, load_quantized, quantize_
    from sparsa.quant.store import _save_weights_only, quant_layers

    lm = load(tiny_bert)
    quantize_(lm, QuantConfig(bits=8))
    old = tmp_path / "old"
    _save_weights_only(lm.model, quant_layers(lm), old, str(tiny_bert), False)  # what `sparsa quantize` wrote before
    with pytest.raises(SparsaError, match="older layout") as e:
        load(old)
    assert "sparsa quantize" in e.value.hint and str(tiny_bert) in e.value.hint
    r = _invoke(["info", old])
    assert isinstance(r.exception, SparsaError) and "older layout" in r.exception.message
    back = load_quantized(old)  # still read while its source exists
    x = lm.example_inputs(batch=1, seq_len=8)
    with torch.no_grad():
        assert torch.equal(back.model(**x)[0], lm.model(**x)[0])


def test_corrupt_packed_codes_are_a_clear_error(tiny_bert, tmp_path):
    from safetensors.torch import load_file, save_file

    from sparsa.models import load

    assert _invoke(["quantize", tiny_bert, "--bits", "4", "--out", tmp_path / "q"]).exit_code == 0
    t = load_file(str(tmp_path / "q" / "model.safetensors"))
    name = next(k for k in t if k.endswith(".qweight"))
    t[name] = t[name][:-3].clone()
    save_file(t, str(tmp_path / "q" / "model.safetensors"))
    with pytest.raises(SparsaError, match="code bytes"):
        load(tmp_path / "q")


def test_sparsa_load_reads_every_folder_from_plain_python(tiny_bert, tmp_path):
    """From a fresh interpreter: `import sparsa` imports no torch; `sparsa.models.load` of a quantized or PENNI
    folder (no technique imported) names `sparsa.load` as the fix; `sparsa.load` reads both."""
    q, p = tmp_path / "q", tmp_path / "p"
    assert _invoke(["quantize", tiny_bert, "--bits", "4", "--out", q]).exit_code == 0
    assert _invoke(["decompose", "tiny-cnn", "--epochs", "0", "--finetune-epochs", "0", "--limit", "16",
                    "--out", p]).exit_code == 0
    code = textwrap.dedent("""
        import sys
        import sparsa
        assert "torch" not in sys.modules, "import sparsa stays light"
        from sparsa.errors import SparsaError
        from sparsa.models import load
        folders = {sys.argv[1]: "QuantLinear", sys.argv[2]: "Penni"}
        for folder, kind in folders.items():  # before any technique is imported
            try:
                load(folder)
            except SparsaError as e:
                assert kind in e.message and "sparsa.load(path)" in e.hint, (e.message, e.hint)
            else:
                raise AssertionError(f"{folder} loaded with no technique imported")
        for folder, kind in folders.items():
            assert any(type(m).__name__.startswith(kind) for m in sparsa.load(folder).model.modules())
        print("ok")
    """)
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-c", code, str(q), str(p)], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


@pytest.mark.parametrize("bits, byte, code", [(8, 255, "128"), (4, 0xFF, "8")])
def test_packed_codes_outside_the_range_are_a_clear_error(tiny_bert, tmp_path, bits, byte, code):
    """8-bit sym byte 255 is code +128: it wrapped to -128 in the int8 buffer; 4-bit nibble 15 is +8."""
    from safetensors.torch import load_file, save_file

    from sparsa.models import load

    assert _invoke(["quantize", tiny_bert, "--bits", str(bits), "--out", tmp_path / "q"]).exit_code == 0
    t = load_file(str(tmp_path / "q" / "model.safetensors"))
    name = next(k for k in t if k.endswith(".qweight"))
    t[name] = torch.full_like(t[name], byte)
    save_file(t, str(tmp_path / "q" / "model.safetensors"))
    with pytest.raises(SparsaError, match=f"stored code {code} is outside the {bits}-bit sym range"):
        load(tmp_path / "q")
