"""The export's BERT fusion runs with the weights kept in a file (memory on full-size models): its result
must be exactly ONNX Runtime's own `optimize_model` result, byte for byte, also when a fusion reads a
weight that was left in the file (then it fuses again with every weight loaded)."""

from __future__ import annotations

import onnx
import pytest
import torch

from sparsa.quant import export


@pytest.fixture(scope="module")
def float_bert(tmp_path_factory):
    """A tiny BERT (eager attention, as the export traces it for the fusion) and its float ONNX file."""
    from transformers import BertConfig, BertModel

    from sparsa.models import from_module

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, attn_implementation="eager")
    loaded = from_module(BertModel(cfg).eval())
    inputs = loaded.example_inputs(batch=1, seq_len=12)
    names = list(inputs)
    path = tmp_path_factory.mktemp("float") / "float.onnx"
    with torch.no_grad():
        torch.onnx.export(export.PositionalWrapper(loaded.model, names), tuple(inputs[n] for n in names), str(path),
                          input_names=names, output_names=["output"],
                          dynamic_axes={**{n: {0: "batch", 1: "seq"} for n in names}, "output": {0: "batch"}},
                          opset_version=17, dynamo=False)
    return loaded, path


def _reference(path, loaded, tables: bool) -> bytes:
    """ONNX Runtime's optimize_model with the options the export gives it, saved and read back."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    opts = FusionOptions("bert")
    opts.enable_embed_layer_norm = tables
    cfg = loaded.config
    om = optimizer.optimize_model(str(path), model_type="bert", num_heads=cfg.num_attention_heads,
                                  hidden_size=cfg.hidden_size, opt_level=1, optimization_options=opts)
    out = path.with_name(f"reference-{tables}.onnx")
    om.save_model_to_file(str(out))
    return out.read_bytes()


@pytest.mark.parametrize("tables", [False, True])
def test_fusion_with_weights_in_a_file_is_ort_optimize_model_byte_for_byte(float_bert, tmp_path, tables):
    loaded, src = float_bert
    ref = _reference(src, loaded, tables)
    work = tmp_path / "float.onnx"
    work.write_bytes(src.read_bytes())
    proto = export._ort_fuse(work, loaded, embed_layer_norm=tables)
    assert proto.SerializeToString() == ref
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Attention") == 2  # it did fuse (the comparison is not between two unfused graphs)
    assert ("EmbedLayerNormalization" in ops) == tables


def test_a_fusion_that_reads_a_weight_left_in_the_file_fuses_again_with_all_loaded(float_bert, tmp_path, monkeypatch):
    loaded, src = float_bert
    ref = _reference(src, loaded, False)
    work = tmp_path / "float.onnx"
    work.write_bytes(src.read_bytes())
    # every weight left in the file: the Attention fusion's read of Q/K/V (relative to the working folder) fails
    monkeypatch.setattr(export, "_load_for_fusion", lambda path, tables: onnx.load(str(path), load_external_data=False))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert export._ort_fuse(work, loaded, embed_layer_norm=False).SerializeToString() == ref
