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
    assert (out / "quant.safetensors").is_file() and (out / "model_int8.onnx").is_file()
    assert res["onnx_bytes"]["int_bytes"] > 0
    from sparsa.quant import QuantLinear, load_quantized

    back = load_quantized(out)
    assert isinstance(back.model.encoder.layer[0].output.dense, QuantLinear)


@pytest.mark.parametrize("args, words", [(["--bits", "9"], "2..8"), (["--bits", "eight"], "not a bit width"),
                                         (["--scheme", "affine"], "sym, asym")])
def test_quantize_cli_bad_input(tiny_folder, tmp_path, args, words):
    r = _invoke(["quantize", str(tiny_folder), "--out", str(tmp_path / "x"), *args])
    assert isinstance(r.exception, SparsaError) and words in str(r.exception)
