"""Integer ONNX export: runs in ONNX Runtime on integer kernels and matches sparsa's integer simulation."""

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from sparsa.quant import QuantConfig, quantize_
from sparsa.quant.export import export_onnx, onnx_session, zero_points_in


@pytest.fixture(scope="module")
def tiny_bert():
    from transformers import BertConfig, BertModel

    from sparsa.models import from_module

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=1100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)
    return from_module(BertModel(cfg).eval())


def _run(path, inputs):
    s = onnx_session(path, threads=1)
    names = {i.name for i in s.get_inputs()}
    return s.run(None, {k: v.numpy() for k, v in inputs.items() if k in names})[0]


def _compare(q, path, seq=12):
    inputs = q.example_inputs(batch=2, seq_len=seq)
    y_ort = _run(path, inputs)
    with torch.no_grad():
        y_sim = q.model(**inputs).last_hidden_state.numpy()
    return np.abs(y_ort - y_sim).max() / np.abs(y_sim).max()


def _integer_ops(path):
    return [n.op_type for n in onnx.load(str(path)).graph.node if n.op_type in ("MatMulInteger", "QAttention")]


@pytest.mark.parametrize("fuse", [False, True])
def test_dynamic_export_matches_simulation(tiny_bert, tmp_path, fuse):
    q = tiny_bert.clone()
    # mixed: FFN-in layers smoothed (SmoothQuant Mul kept in the graph), the pooler kept in float
    cfg = QuantConfig(bits=8, clip="search", activations="dynamic", act_scheme="asym",
                      overrides={"*.intermediate.dense": {"smooth": 0.5}, "pooler.*": None})
    quantize_(q, cfg, calib=[tiny_bert.example_inputs(batch=1, seq_len=12)])
    p = export_onnx(q, tmp_path / "m.onnx", seq_len=12, fuse=fuse)
    ops = _integer_ops(p)
    assert ops.count("MatMulInteger") == (6 if fuse else 12) and ops.count("QAttention") == (2 if fuse else 0)
    # no float copy of any quantized weight is left: only embeddings/norms/biases stay float
    proto = onnx.load(str(p))
    big_float = [i.name for i in proto.graph.initializer
                 if numpy_helper.to_array(i).dtype == np.float32 and numpy_helper.to_array(i).ndim == 2
                 and "embeddings" not in i.name and numpy_helper.to_array(i).shape[0] != 1100]
    assert not [n for n in big_float if numpy_helper.to_array(
        next(i for i in proto.graph.initializer if i.name == n)).shape in ((32, 32), (32, 64), (64, 32), (32, 96))]
    # sparsa's codes are what ORT reads (uint8 storage = int8 code + 128)
    w = next(i for i in proto.graph.initializer if i.name == "q_encoder_layer_0_output_dense_wq")
    codes = q.model.encoder.layer[0].output.dense.qweight
    assert np.array_equal(numpy_helper.to_array(w).astype(np.int16) - 128, codes.numpy().T.astype(np.int16))
    assert _compare(q, p) < 1e-5


def test_symmetric_static_export_has_no_zero_point(tiny_bert, tmp_path):
    calib = [tiny_bert.example_inputs(batch=1, seq_len=12)]
    q = tiny_bert.clone()
    quantize_(q, QuantConfig(bits=8, scheme="sym", clip="search", activations="static"), calib=calib)
    p = export_onnx(q, tmp_path / "sym.onnx", seq_len=12)
    assert zero_points_in(p) == []
    proto = onnx.load(str(p))
    qls = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert qls and all(len(n.input) == 2 for n in qls)  # scale only, int8 output
    assert all(numpy_helper.to_array(i).dtype == np.int8 for i in proto.graph.initializer if i.name.endswith("_wq"))
    assert _compare(q, p) < 1e-5
    # the check can fail: an asymmetric export does carry zero points
    qa = tiny_bert.clone()
    quantize_(qa, QuantConfig(bits=8, scheme="asym", activations="static"), calib=calib)
    pa = export_onnx(qa, tmp_path / "asym.onnx", seq_len=12)
    assert zero_points_in(pa)
    assert _compare(qa, pa) < 1e-5


@pytest.mark.parametrize("fuse", [False, True])
def test_seven_bit_weights_export_as_int8_for_u8s8_kernels(tiny_bert, tmp_path, fuse):
    """7-bit symmetric codes are stored int8 (ORT's u8×s8 kernels cannot saturate at ±63) and ORT
    still computes exactly sparsa's integer simulation; 8-bit codes keep the exact u8×u8 storage."""
    q = tiny_bert.clone()
    quantize_(q, QuantConfig(bits=7, clip="search", activations="dynamic", act_scheme="asym"))
    p = export_onnx(q, tmp_path / "w7.onnx", seq_len=12, fuse=fuse)
    proto = onnx.load(str(p))
    wq = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer if i.name.endswith("_wq")}
    assert wq and all(a.dtype == np.int8 and np.abs(a.astype(np.int16)).max() <= 63 for a in wq.values())
    codes = q.model.encoder.layer[0].output.dense.qweight
    assert np.array_equal(wq["q_encoder_layer_0_output_dense_wq"], codes.numpy().T)
    assert not [n for n in proto.graph.node if n.op_type in ("MatMulInteger", "QAttention") and len(n.input) > 3
                and n.input[3 if n.op_type == "MatMulInteger" else 7]]  # no weight zero point
    assert _compare(q, p) < 1e-5  # (8-bit codes keep the u8×u8 storage: test_dynamic_export_matches_simulation)


@pytest.mark.parametrize("spinning", [False, True])
def test_onnx_session_spinning_option_is_honoured(tmp_path, spinning):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    p = tmp_path / "id.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(p))
    so = onnx_session(p, threads=2, spinning=spinning).get_session_options()
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == ("1" if spinning else "0")
    assert so.intra_op_num_threads == 2


def test_exporting_through_the_wrapper_keeps_the_model_in_eval_mode(tiny_bert, tmp_path):
    """The TorchScript exporter restores the *wrapper's* mode: a fresh (training) wrapper used to
    leave the exported model in training mode, dropout on, and every later PyTorch run perturbed."""
    from sparsa.quant.export import PositionalWrapper

    model = tiny_bert.model.eval()
    x = tiny_bert.example_inputs(batch=1, seq_len=8)
    with torch.no_grad():
        before = model(**x).last_hidden_state
        torch.onnx.export(PositionalWrapper(model, list(x)), tuple(x.values()), str(tmp_path / "m.onnx"),
                          input_names=list(x), output_names=["output"], dynamo=False, opset_version=17)
        after = model(**x).last_hidden_state
    assert not any(m.training for m in model.modules())
    assert torch.equal(before, after)


def test_unfused_layernorm_export_matches_and_asks_sessions_to_keep_it(tiny_bert, tmp_path, monkeypatch):
    import onnxruntime as ort

    from sparsa.quant.export import session_hints

    q = tiny_bert.clone()
    quantize_(q, QuantConfig(bits=7, clip="max", activations="dynamic", act_scheme="asym", overrides={"pooler.*": None}))
    fused = export_onnx(q, tmp_path / "fused.onnx", seq_len=12, fuse=True)
    plain = export_onnx(q, tmp_path / "plain.onnx", seq_len=12, fuse=True, skip_layernorm=False)
    ops = [n.op_type for n in onnx.load(str(plain)).graph.node]
    assert "SkipLayerNormalization" not in ops and ops.count("LayerNormalization") == 4
    assert session_hints(plain) == ["SkipLayerNormFusion"] and session_hints(fused) == []
    inputs = q.example_inputs(batch=2, seq_len=12)
    assert np.abs(_run(plain, inputs) - _run(fused, inputs)).max() < 1e-4
    assert _compare(q, plain) < 1e-4
    seen, real = [], ort.InferenceSession  # onnx_session passes the file's hint on to ORT

    def spy(*a, **kw):
        seen.append(kw.get("disabled_optimizers"))
        return real(*a, **kw)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    onnx_session(plain), onnx_session(fused), onnx_session(fused, disabled_optimizers=["SkipLayerNormFusion"])
    assert seen[-1] == ["SkipLayerNormFusion"] and seen[-2] is None and ["SkipLayerNormFusion"] in seen[:-2]
    with pytest.raises(Exception, match="fuse"):
        export_onnx(q, tmp_path / "x.onnx", seq_len=12, fuse=False, skip_layernorm=False)


@pytest.mark.parametrize("family", ["roberta", "electra", "distilbert", "deit"])
def test_other_families_export_on_integer_kernels_and_match_simulation(family, tmp_path):
    """Encoders that no issue names (RoBERTa/ELECTRA load as BERT layout, DistilBERT its own, DeiT as ViT)."""
    from sparsa.models.tiny import tiny_model

    q = tiny_model(family)
    quantize_(q, QuantConfig(bits=8, activations="dynamic", act_scheme="asym"))
    p = export_onnx(q, tmp_path / "m.onnx", seq_len=12)
    # (the base models' pooler is not on the exported output, last_hidden_state)
    n_linear = sum(1 for n, m in q.model.named_modules() if hasattr(m, "qweight") and "pooler" not in n)
    ops = _integer_ops(p)
    # every quantized Linear runs on an integer kernel (a QAttention takes Q, K and V together)
    assert ops.count("MatMulInteger") + 3 * ops.count("QAttention") == n_linear
    inputs = q.example_inputs(batch=2, seq_len=12)
    s = onnx_session(p, threads=1)
    names = {i.name for i in s.get_inputs()}
    y_ort = s.run(None, {k: v.numpy() for k, v in inputs.items() if k in names})[0]
    with torch.no_grad():
        out = q.model(**inputs)
    y_sim = (out.last_hidden_state if q.adapter.modality == "text" else out.logits).numpy()
    assert np.abs(y_ort - y_sim).max() / np.abs(y_sim).max() < 1e-5


def test_head_pruned_bert_still_fuses_into_qattention(tmp_path):
    """After head pruning the attention is narrower than the model: ORT's fusion must be told its width."""
    from sparsa.models.tiny import tiny_model
    from sparsa.prune import PrunePlan, prune

    q = prune(tiny_model("bert"), PrunePlan(heads=0.5, ffn=0.5))
    quantize_(q, QuantConfig(bits=8, activations="dynamic", act_scheme="asym"))
    p = export_onnx(q, tmp_path / "m.onnx", seq_len=12)
    ops = _integer_ops(p)
    assert ops.count("QAttention") == 2 and ops.count("MatMulInteger") == 6
    assert _compare(q, p) < 1e-5
