"""`sparsa eval` of a quantized folder that holds its integer ONNX file measures that file too: the same
quality measure on the same data and batches, and ONNX Runtime latency against the reference, as
`onnxruntime_*` fields beside the PyTorch model's."""

import json

import pytest
import torch
import transformers as tf
from typer.testing import CliRunner

import sparsa.cli  # noqa: F401  registers the command modules
from sparsa.cli.app import app
from sparsa.errors import SparsaError

runner = CliRunner()


def _json(args):
    r = runner.invoke(app, args)
    assert r.exit_code == 0, (r.output, r.exception)
    return json.loads(r.stdout.strip().splitlines()[-1])


def _quantized(model, out, *extra):
    _json(["quantize", str(model), "--bits", "8", "--activations", "dynamic", *extra, "--out", str(out), "--json"])
    return out


def test_a_text_folders_onnx_file_is_scored_and_timed_beside_the_model(tiny_text_folder, tmp_path):
    q = _quantized(tiny_text_folder, tmp_path / "q", "--onnx", "--seq-len", "16")
    r = _json(["eval", str(q), "--reference", str(tiny_text_folder), "--runs", "3", "--seq-len", "16", "--json"])
    assert r["onnxruntime_file"].endswith("model_int8.onnx")
    # the file computes sparsa's integer simulation: the same texts, batches and pooling score alike
    assert abs(r["onnxruntime_cosine_mean"] - r["cosine_mean"]) < 0.01 and r["onnxruntime_cosine_mean"] > 0.9
    assert r["onnxruntime_cosine_min"] <= r["onnxruntime_cosine_p10"] <= r["onnxruntime_cosine_mean"]
    assert r["onnxruntime_latency_ms"] > 0 and r["onnxruntime_latency_ratio"] > 0
    plain = _json(["eval", str(_quantized(tiny_text_folder, tmp_path / "p")), "--reference", str(tiny_text_folder),
                   "--runs", "1", "--json"])
    assert not [k for k in plain if k.startswith("onnxruntime")]  # no file, no such fields


def test_an_image_classifiers_onnx_file_reports_accuracy_and_agreement(tmp_path):
    q = _quantized("tiny-vit", tmp_path / "q", "--onnx")
    r = _json(["eval", str(q), "--samples", "32", "--runs", "2", "--json"])
    assert r["reference"] == "tiny-vit" and "onnxruntime_reference_accuracy" not in r
    # at most a sample or two flips between the simulation and the file (float rounding between the GEMMs)
    assert abs(r["onnxruntime_accuracy"] - r["accuracy"]) <= 2 / 32 and r["onnxruntime_top1_agreement"] >= 0.9
    assert r["onnxruntime_logit_cosine"] > 0.99


def test_a_backbones_onnx_file_is_compared_output_by_output(tmp_path):
    torch.manual_seed(0)
    d = tmp_path / "vit"
    tf.ViTModel(tf.ViTConfig(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64), add_pooling_layer=False).eval().save_pretrained(d)
    q = _quantized(d, tmp_path / "q", "--onnx")
    r = _json(["eval", str(q), "--reference", str(d), "--samples", "8", "--runs", "1", "--json"])
    assert r["onnxruntime_compared"] == "main output per sample"
    assert abs(r["onnxruntime_cosine_mean"] - r["cosine_mean"]) < 0.01


def test_a_file_this_cpu_cannot_run_is_reported_as_skipped(tiny_text_folder, tmp_path, monkeypatch):
    import sparsa.quant.export as export

    q = _quantized(tiny_text_folder, tmp_path / "q", "--onnx", "--seq-len", "16")

    def refuse(path, *a, **kw):
        raise SparsaError(f"{path} needs VNNI, and this CPU has none")

    monkeypatch.setattr(export, "onnx_session", refuse)
    r = _json(["eval", str(q), "--reference", str(tiny_text_folder), "--runs", "1", "--seq-len", "16", "--json"])
    assert "needs VNNI" in r["onnxruntime_skipped"] and "onnxruntime_latency_ms" not in r
    assert r["cosine_mean"] > 0.9  # the model itself is still measured


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_the_file_gets_its_inputs_in_the_types_it_declares(tiny_text_folder, tmp_path, dtype):
    from sparsa.models import load
    from sparsa.quant.onnx_model import OnnxModel

    q = _quantized(tiny_text_folder, tmp_path / "q", "--onnx", "--seq-len", "16")
    lm = load(str(q))
    m = OnnxModel(q / "model_int8.onnx", lm.adapter, threads=1)
    x = {k: v.to(dtype) for k, v in lm.example_inputs(batch=2, seq_len=16).items()}
    out = m(**x, unused=torch.zeros(1))
    assert tuple(out.last_hidden_state.shape) == (2, 16, 32)
    with pytest.raises(SparsaError, match="were not given"):
        m(**{k: v for k, v in x.items() if k != "input_ids"})


def test_a_recipes_saved_model_folder_carries_its_onnx_file(tiny_text_folder, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({
        "name": "q", "model": str(tiny_text_folder),
        "stages": [{"type": "quantize", "bits": 8, "activations": "dynamic", "onnx": True}],
        "evaluation": {"quality": False, "latency": None, "seq_len": 16},
        "hardware": None, "report": {"html": False, "save_model": True}}))
    out = tmp_path / "run"
    r = runner.invoke(app, ["run", str(recipe), "--out", str(out), "--json"])
    assert r.exit_code == 0, (r.output, r.exception)
    folder = out / "model"
    assert (folder / "model_int8.onnx").read_bytes() == (out / "model_int8.onnx").read_bytes()
    e = _json(["eval", str(folder), "--reference", str(tiny_text_folder), "--runs", "1", "--seq-len", "16", "--json"])
    assert e["onnxruntime_cosine_mean"] > 0.9 and e["onnxruntime_latency_ms"] > 0


def test_a_damaged_onnx_file_is_named_as_such_and_the_model_still_measured(tiny_text_folder, tmp_path):
    from sparsa.quant.export import onnx_session

    q = _quantized(tiny_text_folder, tmp_path / "q", "--onnx", "--seq-len", "16")
    f = q / "model_int8.onnx"
    f.write_bytes(f.read_bytes()[:1000])  # a copy cut short
    with pytest.raises(SparsaError, match="cannot load this file") as e:
        onnx_session(f)
    assert "re-export" in e.value.hint
    with pytest.raises(SparsaError, match="no such ONNX file"):
        onnx_session(tmp_path / "absent.onnx")
    r = _json(["eval", str(q), "--reference", str(tiny_text_folder), "--runs", "1", "--seq-len", "16", "--json"])
    assert "cannot load this file" in r["onnxruntime_skipped"] and r["cosine_mean"] > 0.9


def test_info_of_a_folder_describes_its_onnx_file(tiny_text_folder, tmp_path):
    q = _quantized(tiny_text_folder, tmp_path / "q", "--onnx", "--seq-len", "16")
    r = _json(["info", str(q), "--json"])
    f = q / "model_int8.onnx"
    assert r["onnx_file_bytes"] == f.stat().st_size and r["onnx_embeddings"] == "int8"
    assert r["onnx_float_layers"] == [] and r["onnx_weights"] in ("int8", "uint8") and r["onnx_cpu_needs"]
    f.write_bytes(f.read_bytes()[:1000])
    damaged = _json(["info", str(q), "--json"])
    assert "onnx_unreadable" in damaged and damaged["layers"] == r["layers"]  # the model is still described
    assert "onnx_file" not in _json(["info", str(tiny_text_folder), "--json"])


def test_inputs_the_file_was_not_exported_for_are_named_and_the_model_still_measured(tmp_path):
    from sparsa.models import load
    from sparsa.quant.onnx_model import OnnxModel

    q = _quantized("tiny-swin", tmp_path / "q", "--onnx")  # Swin pads: PyTorch takes 64 px, the file its 32 px
    m = OnnxModel(q / "model_int8.onnx", load(str(q)).adapter, threads=1)
    with pytest.raises(SparsaError, match=r"does not run on inputs .*64, 64.*exported for") as e:
        m(pixel_values=torch.randn(1, 3, 64, 64))
    assert "--image-size" in e.value.hint
    r = _json(["eval", str(q), "--image-size", "64", "--samples", "8", "--runs", "1", "--json"])
    assert "does not run on inputs" in r["onnxruntime_skipped"] and "accuracy" in r


def test_a_run_failure_that_is_not_about_sizes_is_not_called_a_size_mismatch(tiny_text_folder, tmp_path):
    from sparsa.models import load
    from sparsa.quant.onnx_model import OnnxModel

    q = _quantized(tiny_text_folder, tmp_path / "q", "--onnx")
    lm = load(str(q))
    m = OnnxModel(q / "model_int8.onnx", lm.adapter, threads=1)
    inputs = lm.example_inputs(batch=1, seq_len=8)
    assert m(**inputs).last_hidden_state.shape[:2] == (1, 8)  # symbolic batch / seq axes take any length

    real = m.session

    class OutOfMemory:  # what ONNX Runtime raises when an allocation fails inside a kernel
        def __getattr__(self, name):
            return getattr(real, name)

        def run(self, *a, **k):
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : bad allocation")

    m.session = OutOfMemory()
    with pytest.raises(SparsaError, match="failed running model_int8.onnx .*bad allocation") as e:
        m(**inputs)
    assert "does not run on inputs" not in e.value.message and "memory" in e.value.hint


def test_an_input_of_another_rank_is_refused_before_onnx_runtime_runs(tiny_text_folder, tmp_path):
    from sparsa.models import load
    from sparsa.quant.onnx_model import OnnxModel

    q = _quantized(tiny_text_folder, tmp_path / "q", "--onnx")
    m = OnnxModel(q / "model_int8.onnx", load(str(q)).adapter, threads=1)
    calls = []
    m.session.run = lambda *a, **k: calls.append(a)  # noqa: E731  must not be reached
    flat = {n: torch.ones(8, dtype=torch.long) for n in m.input_names}
    with pytest.raises(SparsaError, match="does not run on inputs .*exported for"):
        m(**flat)
    assert not calls
