"""`sparsa quantize` end to end on a tiny saved BERT: folder written, JSON fields, ONNX, bad input."""

import json

import pytest
import torch
from typer.testing import CliRunner

from sparsa.errors import SparsaError


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from transformers import BertConfig, BertModel

    from sparsa.models import from_module

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=1100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)
    d = tmp_path_factory.mktemp("tiny") / "bert"
    from_module(BertModel(cfg).eval(), source="tiny").save(d)
    return d


def _invoke(args):
    import sparsa.cli  # noqa: F401  (registers the command modules)
    from sparsa.cli.app import app

    return CliRunner().invoke(app, args)


def test_quantize_cli_writes_folder_and_onnx(tiny_folder, tmp_path):
    out = tmp_path / "q"
    r = _invoke(["quantize", str(tiny_folder), "--bits", "4", "--scheme", "sym", "--clip", "search",
                 "--out", str(out), "--onnx", "--seq-len", "8", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["bits"] == 4 and res["layers"] == 7  # 6 encoder Linears + pooler
    assert res["bytes"] < res["fp32_bytes"] and res["zero_point_bytes"] == 0
    assert (out / "model.safetensors").is_file() and (out / "model_int8.onnx").is_file()
    assert json.loads((out / "result.json").read_text())["layers"] == 7
    assert res["onnx_bytes"]["int_bytes"] > 0
    assert res["embeddings"] == "int8" and "embeddings.word_embeddings" in res["embedding_tables"]
    assert res["float_layers"] == [] and isinstance(res["cpu_isa"], list)
    assert (res["onnx_weights"], res["cpu_needs"]) == ("int8", "")  # 4-bit codes: u8×s8 is exact on any CPU
    from sparsa.quant import QuantLinear, load_quantized

    back = load_quantized(out)
    assert isinstance(back.model.encoder.layer[0].output.dense, QuantLinear)


def test_quantize_cli_names_layers_left_float_and_takes_embedding_storage(tiny_folder, tmp_path):
    out = tmp_path / "kf"
    r = _invoke(["quantize", str(tiny_folder), "--keep-float", "encoder.layer.0.output.dense", "--embeddings", "float",
                 "--out", str(out), "--onnx", "--seq-len", "8", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["float_layers"] == ["encoder.layer.0.output.dense"]
    assert res["embeddings"] == "float" and res["embedding_tables"] == []


@pytest.mark.parametrize("args, words", [(["--bits", "9"], "2..8"), (["--bits", "eight"], "not a bit width"),
                                         (["--scheme", "affine"], "sym, asym"), (["--embeddings", "int3"], "int8")])
def test_quantize_cli_bad_input(tiny_folder, tmp_path, args, words):
    r = _invoke(["quantize", str(tiny_folder), "--out", str(tmp_path / "x"), *args])
    assert isinstance(r.exception, SparsaError) and words in str(r.exception)


@pytest.fixture(scope="module")
def tiny_folder_with_tokenizer(tmp_path_factory):
    """A tiny random BERT with MiniLM's vocabulary and tokenizer: calibration on text needs one."""
    from transformers import BertConfig, BertModel

    from sparsa.models import from_module, load

    tok = load("minilm").tokenizer
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)
    d = tmp_path_factory.mktemp("tiny_tok") / "bert"
    from_module(BertModel(cfg).eval(), tokenizer=tok, source="tiny").save(d)
    return d


def test_quantize_cli_smoothing_layout_and_split_layernorm(tiny_folder_with_tokenizer, tmp_path):
    import onnx

    from sparsa.quant import load_quantized

    out = tmp_path / "s"
    r = _invoke(["quantize", str(tiny_folder_with_tokenizer), "--bits", "7", "--clip", "max", "--activations", "dynamic",
                 "--smooth", "0.5", "--smooth-ffn-out", "0.7", "--calib", "corpus", "--calib-samples", "4",
                 "--out", str(out), "--onnx", "--split-layernorm", "--fast-gelu", "--seq-len", "8", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["smooth"] == 0.5 and res["smooth_ffn_out"] == 0.7
    layer = load_quantized(out).model.encoder.layer[0]
    qkv = [getattr(layer.attention.self, n).smooth_inv for n in ("query", "key", "value")]
    assert all(s is not None for s in qkv) and torch.equal(qkv[0], qkv[1]) and torch.equal(qkv[0], qkv[2])
    assert layer.attention.output.dense.smooth_inv is None  # folded into V, no run-time op
    assert layer.output.dense.smooth_inv is not None  # FFN-out: its own strength
    ops = {n.op_type for n in onnx.load(str(out / "model_int8.onnx")).graph.node}
    assert "SkipLayerNormalization" not in ops and "LayerNormalization" in ops
    assert "FastGelu" in ops and "Gelu" not in ops  # --fast-gelu reached the fused export
    r = _invoke(["quantize", str(tiny_folder_with_tokenizer), "--out", str(tmp_path / "x"), "--fast-gelu"])
    assert isinstance(r.exception, SparsaError) and "--onnx" in r.exception.hint
    r = _invoke(["quantize", str(tiny_folder_with_tokenizer), "--out", str(tmp_path / "y"), "--fused-layernorm"])
    assert isinstance(r.exception, SparsaError) and "--onnx" in r.exception.hint


def test_quantize_cli_ffn_out_strength_alone_smooths_only_ffn_out(tiny_folder_with_tokenizer, tmp_path):
    from sparsa.quant import load_quantized

    out = tmp_path / "x"
    r = _invoke(["quantize", str(tiny_folder_with_tokenizer), "--bits", "7", "--activations", "dynamic",
                 "--smooth-ffn-out", "0.7", "--calib", "corpus", "--calib-samples", "4", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    lm = load_quantized(out)
    for layer in lm.model.encoder.layer:
        assert layer.output.dense.smooth_inv is not None  # FFN-out: smoothed
        assert layer.intermediate.dense.smooth_inv is None and layer.attention.self.query.smooth_inv is None


def test_quantize_cli_smooth_budget_trims_the_muls(tiny_folder_with_tokenizer, tmp_path):
    from sparsa.quant import load_quantized

    out = tmp_path / "t"
    r = _invoke(["quantize", str(tiny_folder_with_tokenizer), "--bits", "7", "--clip", "max", "--activations", "dynamic",
                 "--smooth", "0.5", "--smooth-ffn-out", "0.7", "--smooth-budget", "0.99", "--calib", "corpus",
                 "--calib-samples", "4", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    trim = json.loads(r.stdout.strip().splitlines()[-1])["smooth_trim"]
    assert trim["kept"] == [] and "encoder.layer.0.output.dense" in trim["dropped"]  # a huge budget drops every Mul
    layer = load_quantized(out).model.encoder.layer[0]
    assert layer.output.dense.smooth_inv is None and layer.attention.self.query.smooth_inv is None
    r = _invoke(["quantize", str(tiny_folder_with_tokenizer), "--out", str(tmp_path / "x"), "--smooth-budget", "0.01"])
    assert isinstance(r.exception, SparsaError) and "--smooth" in str(r.exception)
    r = _invoke(["quantize", str(tiny_folder_with_tokenizer), "--out", str(tmp_path / "x"), "--smooth", "0.5",
                 "--smooth-budget", "1.5"])
    assert isinstance(r.exception, SparsaError) and "--smooth-budget 1.5" in str(r.exception)


def test_quantize_cli_float16_storage(tiny_folder, tmp_path):
    runs = {}
    for fs in ("float32", "float16"):
        r = _invoke(["quantize", str(tiny_folder), "--float-storage", fs, "--out", str(tmp_path / fs), "--json"])
        assert r.exit_code == 0, r.output
        runs[fs] = json.loads(r.stdout.strip().splitlines()[-1])
    a, b = runs["float32"], runs["float16"]
    assert b["float_storage"] == "float16" and b["int_weight_bytes"] == a["int_weight_bytes"]
    assert b["float_bytes"] * 2 == a["float_bytes"] and b["bytes"] < a["bytes"]
    assert (tmp_path / "float16" / "model.safetensors").stat().st_size < (tmp_path / "float32" / "model.safetensors").stat().st_size
    r = _invoke(["quantize", str(tiny_folder), "--float-storage", "bf16", "--out", str(tmp_path / "x")])
    assert isinstance(r.exception, SparsaError) and "float16" in str(r.exception)
