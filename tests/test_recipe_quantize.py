"""The recipe's quantize stage reaches what `sparsa quantize` does: dynamic activations, SmoothQuant
(fused BERT layout, FFN-out strength, trimming), float16 storage, the Sum + LayerNorm ONNX layout."""

from __future__ import annotations

import textwrap

import pytest

from sparsa.errors import SparsaError
from sparsa.recipe import parse_recipe


def _err(text: str) -> str:
    with pytest.raises(SparsaError) as e:
        parse_recipe(textwrap.dedent(text), source="r.yaml")
    return str(e.value)


def test_quantize_options_are_checked_together():
    head = "name: x\nmodel: minilm\nstages:\n  - type: quantize\n"
    assert "set smooth" in _err(head + "    smooth_budget: 0.001\n")
    assert "set smooth" in _err(head + "    smooth_ffn_out: 0.7\n    smooth_budget: 0.001\n")
    assert "set onnx" in _err(head + "    split_layernorm: false\n")  # lays out an export that is not asked for
    unfused = parse_recipe(textwrap.dedent(head + "    onnx: true\n    split_layernorm: false\n"), source="r.yaml")
    assert unfused.recipe.stages[0].split_layernorm is False  # any ONNX export, fused or not
    assert "fast_gelu" in _err(head + "    onnx: true\n    fast_gelu: true\n")
    alone = parse_recipe(textwrap.dedent(head + "    smooth_ffn_out: 0.7\n"), source="r.yaml").recipe.stages[0]
    assert (alone.smooth, alone.smooth_ffn_out) == (None, 0.7)  # FFN-out only
    msg = _err(head + "    activations: dyn\n")
    assert "r.yaml:5" in msg and "activations" in msg
    assert "r.yaml:5" in _err(head + "    float_storage: bf16\n")
    ok = parse_recipe(textwrap.dedent(head + "    activations: dynamic\n    smooth: 0.5\n"), source="r.yaml")
    assert ok.recipe.stages[0].activations == "dynamic"


def test_recipe_runs_smoothed_dynamic_int8_with_float16_storage_and_split_layernorm(tiny_text_folder, tmp_path):
    import onnx

    from sparsa.pipeline import run_recipe

    text = f"""
    name: q
    model: {tiny_text_folder}
    data:
      calib: corpus
      eval: sentences
    stages:
      - type: quantize
        bits: 7
        clip: max
        activations: dynamic
        calib_samples: 8
        smooth: 0.5
        smooth_ffn_out: 0.7
        smooth_budget: 0.99
        float_storage: float16
        onnx: true
        onnx_fuse: true
        split_layernorm: true
        fast_gelu: true
    evaluation:
      max_samples: 16
    """
    res = run_recipe(parse_recipe(textwrap.dedent(text), source="q.yaml"), tmp_path / "out", quiet=True, html=False)
    rec = res["stages"][1]["record"]
    assert rec["smooth_trim"]["kept"] == [] and rec["smooth_trim"]["dropped"]  # budget 0.99 drops every Mul
    assert rec["float_storage"] == "float16"
    # the word embeddings (30522 x 32) dominate this model: at 2 bytes a value it is about half its FP32 size
    assert 0.45 < rec["size"]["ratio"] < 0.55
    assert rec["onnx_bytes"] == (tmp_path / "out" / "model_int8.onnx").stat().st_size
    from sparsa.cli.pipeline_cmds import _summary

    summary = _summary(res, tmp_path / "out")
    # int8 embedding tables in the file: smaller than the float16 folder
    assert summary["onnx_bytes_ratio"] == rec["onnx_bytes"] / res["stages"][0]["bytes"] < summary["bytes_ratio"]
    nodes = onnx.load(rec["onnx"]).graph.node
    ops = [n.op_type for n in nodes]
    assert "QAttention" in ops and "LayerNormalization" in ops and "SkipLayerNormalization" not in ops
    assert "FastGelu" in ops and "Gelu" not in ops and "BiasGelu" not in ops  # fast_gelu reached the export
    assert not [n.name for n in nodes if n.name.endswith("_smooth")]  # no smoothing Mul is left
