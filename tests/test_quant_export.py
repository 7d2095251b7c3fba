"""Integer ONNX export: runs in ONNX Runtime on integer kernels and matches sparsa's integer simulation.

How "matches" is checked, so that it holds on any CPU (AVX2, AVX-512, VNNI, AMX, arm64):
- the integer path exactly (`_assert_integer_path_exact`): in a session with every ORT optimisation
  off and every intermediate tensor exposed, each MatMulInteger's weights are sparsa's codes, its
  int32 accumulator is the exact integer product of its inputs (a saturating or broken kernel fails),
  its activation codes/scale/zero point are what sparsa's `quantize` gives for the same float input
  (a code may differ by one only on a rounding tie, where x/s vs x·(1/s) legitimately disagree), and
  its rescale is float32(acc)·(s_x·s_w) bit for bit (two IEEE multiplies: identical on every ISA);
- the float result of the session a user gets (all optimisations on) against a bound derived from
  the quantization step (`_assert_close_to_simulation`, the derivation is there).
"""

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from sparsa.quant import QuantConfig, quantize_
from sparsa.quant.api import quant_layers
from sparsa.quant.embeddings import dequantize_rows, quantize_rows, with_quantized_embeddings
from sparsa.quant.export import export_info, export_onnx, onnx_session, session_hints, zero_points_in
from sparsa.quant.primitives import choose_qparams, quantize


@pytest.fixture(scope="module")
def tiny_bert():
    from transformers import BertConfig, BertModel

    from sparsa.models import from_module

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=1100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)
    return from_module(BertModel(cfg).eval())


def _feed(session, inputs):
    names = {i.name for i in session.get_inputs()}
    return {k: v.numpy() for k, v in inputs.items() if k in names}


def _run(path, inputs):
    s = onnx_session(path, threads=1)
    return s.run(None, _feed(s, inputs))[0]


def _output(model, inputs):
    with torch.no_grad():
        out = model.model(**inputs)
    return (out.last_hidden_state if model.adapter.modality == "text" else out.logits).numpy()


# A code flip costs one quantization step on one input of a layer, while quantization itself puts an
# error of up to half a step (uniform, variance step²/12) on EVERY input. ORT's optimised session
# differs from the simulation only by float rounding in the ops between the integer GEMMs (blocked
# convolutions, fused LayerNorm/GELU, reduction order: ~1e-6 relative, ISA dependent), which flips a
# code only where an input lies within that rounding of a rounding boundary: a fraction p ~ 1e-6·255
# of codes. To first order (both errors pass through the same layers) the deviation's energy is then
# 12·p times the quantization noise's. Allowing p up to 2% (~100x what rounding can cause) gives
# rms(ORT - sim) <= sqrt(12 · 0.02) ≈ 0.49 · rms(sim - float model); the float floor covers a model
# whose quantization noise is itself at float rounding. A wrong scale, a dropped bias or a broken
# kernel is an error on every element, of the order of the quantization noise or above: it fails.
FLIP_FRACTION = 0.02


def _rms(a):
    return float(np.sqrt(np.mean(np.square(a.astype(np.float64)))))


def _assert_close_to_simulation(y_ort, y_sim, y_float):
    bound = np.sqrt(12 * FLIP_FRACTION) * _rms(y_sim - y_float) + 1e-6 * np.abs(y_sim).max()
    dev = _rms(y_ort - y_sim)
    assert dev <= bound, f"ORT deviates from the simulation by rms {dev:.3g} > bound {bound:.3g}"


def _assert_integer_path_exact(q, path, inputs) -> int:
    """The exact checks described at the top of the file; returns how many integer GEMMs were checked."""
    import onnxruntime as ort

    proto = onnx.load(str(path))
    g = proto.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    have = {o.name for o in g.output}
    for o in [o for n in g.node for o in n.output if o and o not in have]:  # expose every intermediate tensor
        g.output.append(onnx.ValueInfoProto(name=o))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # one plain kernel per node
    s = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    vals = dict(zip([o.name for o in s.get_outputs()], s.run(None, _feed(s, inputs))))
    val = {**inits, **vals}.__getitem__
    layers = {"q_" + n.replace(".", "_"): m for n, m in quant_layers(q.model).items()}
    producer = {o: n for n in g.node for o in n.output}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    checked = 0
    for n in g.node:
        if n.op_type not in ("DynamicQuantizeLinear", "QuantizeLinear"):
            continue
        x, codes = val(n.input[0]), val(n.output[0])
        if n.op_type == "DynamicQuantizeLinear":  # what the simulation does for dynamic activations
            qp = choose_qparams(torch.from_numpy(x), 8, "asym", "max", None)
            assert val(n.output[1]) == qp.scale.numpy() and val(n.output[2]) == qp.zero_point.numpy()
        else:
            qp = layers[_layer_tag(n.name, "_ql")].static_act_qparams()
        while len(consumers.get(n.output[0], [])) == 1 and consumers[n.output[0]][0].op_type == "Clip":
            n = consumers[n.output[0]][0]  # the narrow symmetric grid
            codes = val(n.output[0])
        diff = codes.astype(np.int64) - quantize(torch.from_numpy(x), qp).numpy().astype(np.int64)
        t = x.astype(np.float64) / qp.scale.numpy().astype(np.float64)
        on_tie = np.abs(np.abs(t - np.floor(t)) - 0.5) < 1e-4
        assert np.abs(diff).max(initial=0) <= 1 and not (diff != 0)[~on_tie].any(), f"{n.name}: codes differ"
    for n in g.node:
        if n.op_type != "MatMulInteger":
            continue
        layer = layers[_layer_tag(n.name, "_mmi")]
        a, b = val(n.input[0]).astype(np.int64), val(n.input[1]).astype(np.int64)
        za = val(n.input[2]).astype(np.int64) if len(n.input) > 2 and n.input[2] else 0
        zb = val(n.input[3]).astype(np.int64) if len(n.input) > 3 and n.input[3] else 0
        want_w = layer.qweight.numpy().astype(np.int64)
        if layer.w_zero_point is not None:
            want_w = want_w - layer.w_zero_point.numpy().astype(np.int64).reshape(-1, 1)
        assert np.array_equal(b - zb, want_w.T), f"{n.name}: stored weights are not sparsa's codes"
        acc = val(n.output[0])
        assert np.array_equal(acc.astype(np.int64), (a - za) @ (b - zb)), f"{n.name}: integer accumulator"
        quantizer = producer[n.input[0]]
        while quantizer.op_type == "Clip":
            quantizer = producer[quantizer.input[0]]
        if quantizer.op_type == "DynamicQuantizeLinear":
            s_x = torch.from_numpy(np.asarray(val(quantizer.output[1])))
        else:
            s_x = layer.a_scale
            assert np.array_equal(val(quantizer.input[1]), s_x.numpy().reshape(())), f"{n.name}: activation scale"
        (cast,) = consumers[n.output[0]]
        (mul,) = consumers[cast.output[0]]
        scale = val(mul.input[1])  # the simulation's float32 product s_x · s_w
        assert np.array_equal(scale, (s_x.float() * layer.w_scale.float()).numpy()), f"{n.name}: rescale factor"
        assert np.array_equal(val(mul.output[0]), acc.astype(np.float32) * scale), f"{n.name}: rescale"
        checked += 1
    return checked


def _layer_tag(node_name: str, suffix: str) -> str:
    """The layer's tag in an integer node's name: a layer run again (a shared layer) adds `_use<k>`."""
    return re.sub(r"_use\d+$", "", node_name[: -len(suffix)])


def _compare(q, float_model, path, seq=12):
    """Both checks on `path`; returns the number of integer GEMMs checked exactly. The simulation
    stores the embedding tables as the file does (integer rows by default, see export_info)."""
    inputs = q.example_inputs(batch=2, seq_len=seq)
    checked = _assert_integer_path_exact(q, path, inputs)
    sim = with_quantized_embeddings(q, export_info(path)["embeddings"])
    _assert_close_to_simulation(_run(path, inputs), _output(sim, inputs), _output(float_model, inputs))
    return checked


def _integer_ops(path):
    return [n.op_type for n in onnx.load(str(path)).graph.node if n.op_type in ("MatMulInteger", "QAttention")]


@pytest.mark.parametrize("fuse", [False, True])
def test_dynamic_export_matches_simulation(tiny_bert, tmp_path, fuse):
    q = tiny_bert.clone()
    # mixed: FFN-in layers smoothed (SmoothQuant Mul kept in the graph), the pooler kept in float
    cfg = QuantConfig(bits=8, clip="search", activations="dynamic", act_scheme="asym",
                      overrides={"*.intermediate.dense": {"smooth": 0.5}, "pooler.*": None})
    quantize_(q, cfg, calib=[tiny_bert.example_inputs(batch=1, seq_len=12)])
    # the storage an AVX2 CPU gets for 8-bit codes (u8×u8, exact on any CPU; test_quant_kernels.py has the choice)
    p = export_onnx(q, tmp_path / "m.onnx", seq_len=12, fuse=fuse, cpu_isa=["avx2"])
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
    assert _compare(q, tiny_bert, p) == ops.count("MatMulInteger")


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
    assert _compare(q, tiny_bert, p) == len(_integer_ops(p)) > 0
    # the check can fail: an asymmetric export does carry zero points
    qa = tiny_bert.clone()
    quantize_(qa, QuantConfig(bits=8, scheme="asym", activations="static"), calib=calib)
    pa = export_onnx(qa, tmp_path / "asym.onnx", seq_len=12)
    assert zero_points_in(pa)
    assert _compare(qa, tiny_bert, pa) == len(_integer_ops(pa)) > 0


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
    assert _compare(q, tiny_bert, p) == _integer_ops(p).count("MatMulInteger") > 0  # (8-bit codes keep the u8×u8 storage: test_dynamic_export_matches_simulation)


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


def _session_ops(path, tmp_path):
    """The op types of the graph a plain InferenceSession (default options) actually runs."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / f"{Path(path).stem}_session.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]


@pytest.mark.parametrize("fuse", [True, False])
def test_residual_sums_stay_split_from_layernorm_in_a_plain_onnx_runtime_session(tiny_bert, tmp_path, fuse):
    """ORT fuses Add + LayerNormalization into its slow SkipLayerNormalization in every session; the export
    writes each residual sum as Sum, which the fusion does not match, so even a session with default options
    runs the split form. skip_layernorm=True leaves the sums to the fusion. Values within the simulation's
    bound either way."""
    q = tiny_bert.clone()
    quantize_(q, QuantConfig(bits=7, clip="max", activations="dynamic", act_scheme="asym", overrides={"pooler.*": None}))
    split = export_onnx(q, tmp_path / "split.onnx", seq_len=12, fuse=fuse)
    fused = export_onnx(q, tmp_path / "fused.onnx", seq_len=12, fuse=fuse, skip_layernorm=True)
    ops = [n.op_type for n in onnx.load(str(split)).graph.node]
    # 2 layers x 2 residual sums, + the embeddings' sum and LayerNorm (integer tables: no EmbedLayerNormalization)
    assert "SkipLayerNormalization" not in ops and ops.count("LayerNormalization") == 5 and ops.count("Sum") == 5
    ran = _session_ops(split, tmp_path)
    assert "SkipLayerNormalization" not in ran and ran.count("LayerNormalization") == 5
    assert _session_ops(fused, tmp_path).count("SkipLayerNormalization") >= 2  # what the Sum keeps away
    assert session_hints(split) == []  # no session option needed
    inputs = q.example_inputs(batch=2, seq_len=12)
    y_sim, y_float = _output(with_quantized_embeddings(q, "int8"), inputs), _output(tiny_bert, inputs)
    _assert_close_to_simulation(_run(fused, inputs), y_sim, y_float)
    assert _compare(q, tiny_bert, split) == (6 if fuse else 12)


def test_onnx_session_honours_an_older_files_optimizer_hint(tiny_bert, tmp_path, monkeypatch):
    """Files exported before the residual Sum carry a metadata hint that keeps ORT's SkipLayerNormFusion
    off; onnx_session still passes it on, and an explicit list wins."""
    import onnxruntime as ort

    from sparsa.quant.export import _HINT_KEY, _set_meta

    q = tiny_bert.clone()
    quantize_(q, QuantConfig(bits=7, clip="max", activations="dynamic", act_scheme="asym", overrides={"pooler.*": None}))
    p = export_onnx(q, tmp_path / "m.onnx", seq_len=12, fuse=True)
    proto = onnx.load(str(p))
    _set_meta(proto, _HINT_KEY, "SkipLayerNormFusion")
    old = tmp_path / "old.onnx"
    onnx.save(proto, str(old))
    assert session_hints(old) == ["SkipLayerNormFusion"]
    seen, real = [], ort.InferenceSession

    def spy(*a, **kw):
        seen.append(kw.get("disabled_optimizers"))
        return real(*a, **kw)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    onnx_session(old)
    assert seen[-1] == ["SkipLayerNormFusion"]
    seen.clear()
    onnx_session(p), onnx_session(old, disabled_optimizers=["ConstantSharing"])
    assert seen == [None, ["ConstantSharing"]]


@pytest.mark.parametrize("family", ["roberta", "electra", "distilbert", "deit"])
def test_other_families_export_on_integer_kernels_and_match_simulation(family, tmp_path):
    """Encoders that no issue names (RoBERTa/ELECTRA load as BERT layout, DistilBERT its own, DeiT as ViT)."""
    from sparsa.models.tiny import tiny_model

    float_model = tiny_model(family)
    q = float_model.clone()
    quantize_(q, QuantConfig(bits=8, activations="dynamic", act_scheme="asym"))
    p = export_onnx(q, tmp_path / "m.onnx", seq_len=12)
    # (the base models' pooler is not on the exported output, last_hidden_state)
    n_linear = sum(1 for n, m in q.model.named_modules() if hasattr(m, "qweight") and "pooler" not in n)
    ops = _integer_ops(p)
    # every quantized Linear runs on an integer kernel (a QAttention takes Q, K and V together)
    assert ops.count("MatMulInteger") + 3 * ops.count("QAttention") == n_linear
    assert _compare(q, float_model, p) == ops.count("MatMulInteger")


def test_a_layer_run_several_times_is_integer_at_every_use_with_one_copy_of_its_codes(tmp_path):
    """ALBERT runs one shared layer N times: the exporter reaches the later uses through Identity nodes
    of the one weight. Every use must run on the integer kernel, and the file holds each layer's codes once."""
    import transformers as tf

    from sparsa.models import from_module

    torch.manual_seed(0)
    cfg = tf.AlbertConfig(vocab_size=100, max_position_embeddings=40, embedding_size=16, hidden_size=32,
                          num_hidden_layers=3, num_attention_heads=2, intermediate_size=64)
    float_model = from_module(tf.AlbertModel(cfg).eval(), source="tiny-albert")
    q = float_model.clone()
    quantize_(q, QuantConfig(bits=8, activations="dynamic", act_scheme="asym"))
    p = export_onnx(q, tmp_path / "m.onnx", seq_len=12)
    assert export_info(p)["float_layers"] == []
    # the embedding projection once, the shared layer's 6 Linears at each of the 3 uses
    assert _integer_ops(p).count("MatMulInteger") == 1 + 6 * 3
    codes = [i for i in onnx.load(str(p)).graph.initializer if i.name.endswith("_wq")]
    assert len(codes) == 1 + 6
    assert _compare(q, float_model, p) == 1 + 6 * 3


def test_head_pruned_bert_still_fuses_into_qattention(tmp_path):
    """After head pruning the attention is narrower than the model: ORT's fusion must be told its width."""
    from sparsa.models.tiny import tiny_model
    from sparsa.prune import PrunePlan, prune

    pruned = prune(tiny_model("bert"), PrunePlan(heads=0.5, ffn=0.5))
    q = pruned.clone()
    quantize_(q, QuantConfig(bits=8, activations="dynamic", act_scheme="asym"))
    p = export_onnx(q, tmp_path / "m.onnx", seq_len=12)
    ops = _integer_ops(p)
    assert ops.count("QAttention") == 2 and ops.count("MatMulInteger") == 6
    assert _compare(q, pruned, p) == 6


# ------------------------------------------------------------------------ embedding tables as integers


def _gathered_embeddings(path, inputs) -> dict:
    """{table tag: the dequantized rows the graph gathered}, from a session with every optimisation off."""
    import onnxruntime as ort

    proto = onnx.load(str(path))
    outs = [n.output[0] for n in proto.graph.node if n.name.endswith("_dequantize")]
    proto.graph.output.extend(onnx.ValueInfoProto(name=o) for o in outs)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    vals = dict(zip([o.name for o in s.get_outputs()], s.run(None, _feed(s, inputs))))
    return {n.name.split("_dequantize")[0]: vals[n.output[0]] for n in proto.graph.node if n.name.endswith("_dequantize")}


@pytest.mark.parametrize("storage, fuse", [("int8", False), ("int8", True), ("int4", False), ("int4", True)])
def test_integer_embeddings_gather_sparsas_rows_exactly(tiny_bert, tmp_path, storage, fuse):
    """The word table is stored as sparsa's per-row codes (int8, or two 4-bit codes + 8 per byte), the
    float table is gone, the file is smaller than with float tables, the gathered rows are exactly
    sparsa's per-row dequantization (integer codes, one float32 multiply: the same on every ISA),
    and the whole model stays within the simulation bound of the other exports."""
    q = tiny_bert.clone()
    quantize_(q, QuantConfig(bits=8, activations="dynamic", act_scheme="asym"))
    p = export_onnx(q, tmp_path / "m.onnx", seq_len=12, fuse=fuse, embeddings=storage)
    p_float = export_onnx(q, tmp_path / "f.onnx", seq_len=12, fuse=fuse, embeddings="float")
    assert p.stat().st_size < p_float.stat().st_size
    info = export_info(p)
    assert info["embeddings"] == storage and "embeddings.word_embeddings" in info["embedding_tables"]
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(p)).graph.initializer}
    assert "model.embeddings.word_embeddings.weight" not in inits
    table = q.model.embeddings.word_embeddings.weight
    codes, scale = quantize_rows(table, 8 if storage == "int8" else 4)
    stored = inits["emb_embeddings_word_embeddings_q"]
    if storage == "int8":
        assert stored.dtype == np.int8 and np.array_equal(stored, codes.numpy())
    else:
        assert stored.dtype == np.uint8 and stored.shape == (table.shape[0], table.shape[1] // 2)
        unpacked = np.stack([stored & 15, stored >> 4], axis=-1).reshape(table.shape).astype(np.int16) - 8
        assert np.array_equal(unpacked, codes.numpy()) and np.abs(unpacked).max() <= 7
    inputs = q.example_inputs(batch=2, seq_len=12)
    rows = _gathered_embeddings(p, inputs)
    word = next(v for k, v in rows.items() if k.startswith("emb_embeddings_word_embeddings"))
    want = dequantize_rows(codes, scale)[inputs["input_ids"]].numpy()
    assert word.dtype == np.float32 and np.array_equal(word, want)
    assert _compare(q, tiny_bert, p) == _integer_ops(p).count("MatMulInteger") > 0


def test_embedding_storage_is_checked(tiny_bert, tmp_path):
    from sparsa.errors import SparsaError

    q = tiny_bert.clone()
    quantize_(q, QuantConfig(bits=8, activations="dynamic", act_scheme="asym"))
    with pytest.raises(SparsaError, match="int8"):
        export_onnx(q, tmp_path / "m.onnx", seq_len=12, embeddings="int3")


@pytest.mark.parametrize("fuse", [False, True])
def test_layers_left_in_float_are_named_in_the_file(tiny_bert, tmp_path, fuse):
    """A layer the integer path does not take is recorded, never silent: kept float by the config, and
    with ORT's fusion also the K and V that share its fused Attention (which then stays float)."""
    from sparsa.metrics.cpu import ISA_FEATURES, cpu_info

    q = tiny_bert.clone()
    quantize_(q, QuantConfig(bits=8, activations="dynamic", act_scheme="asym",
                             overrides={"encoder.layer.1.attention.self.query": None}))
    info = export_info(export_onnx(q, tmp_path / "m.onnx", seq_len=12, fuse=fuse))
    qkv = [f"encoder.layer.1.attention.self.{n}" for n in ("query", "key", "value")]
    assert info["float_layers"] == (qkv if fuse else qkv[:1])
    assert info["cpu_isa"] == cpu_info()["isa"] and set(info["cpu_isa"]) <= set(ISA_FEATURES)
    all_int = tiny_bert.clone()
    quantize_(all_int, QuantConfig(bits=8, activations="dynamic", act_scheme="asym"))
    assert export_info(export_onnx(all_int, tmp_path / "i.onnx", seq_len=12, fuse=fuse))["float_layers"] == []


def test_opset_upgrade_keeps_every_weight_byte_and_leaves_no_external_reference():
    """The opset conversion runs without the large initializers (memory on full-size models); they must
    come back exactly, with no leftover external-data marker that would make the file unreadable."""
    from onnx import TensorProto, helper

    from sparsa.quant.export import OPSET, _upgrade_opset

    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 32)).astype(np.float32)  # 8 KB: stashed during the conversion
    axes = np.array([1], np.int64)  # small: stays in place
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("ReduceMean", ["h"], ["y"], axes=[1])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(axes, "unused_axes")])
    proto = _upgrade_opset(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    assert {o.domain: o.version for o in proto.opset_import}[""] == OPSET
    inits = {i.name: i for i in proto.graph.initializer}
    assert all(i.data_location == TensorProto.DEFAULT and not i.external_data for i in inits.values())
    assert numpy_helper.to_array(inits["w"]).tobytes() == w.tobytes()
    assert numpy_helper.to_array(inits["unused_axes"]).tobytes() == axes.tobytes()
    x = rng.standard_normal((2, 64)).astype(np.float32)
    import onnxruntime as ort

    (y,) = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(y[:, 0], (x @ w).mean(axis=1), rtol=1e-5, atol=1e-5)  # float32 sums of 64 terms


@pytest.mark.parametrize("family, conv", [("vit", "vit.embeddings.patch_embeddings.projection"),
                                          ("swin", "swin.embeddings.patch_embeddings.projection"),
                                          ("videomae", "videomae.embeddings.patch_embeddings.projection")])
def test_vision_families_export_on_integer_kernels_and_name_the_float_patch_embedding(family, conv, tmp_path):
    """ViT, Swin (window partition and shifted-window masks in the graph) and VideoMAE (Conv3d tubelet
    embedding): every quantized Linear runs on an integer kernel and equals the simulation; the patch
    embedding, a Conv the integer path does not take, is named in the file's metadata, never silent."""
    from sparsa.models.tiny import tiny_model

    float_model = tiny_model(family)
    q = float_model.clone()
    quantize_(q, QuantConfig(bits=7, activations="dynamic", act_scheme="asym"))
    p = export_onnx(q, tmp_path / "m.onnx")
    n_linear = sum(1 for m in q.model.modules() if hasattr(m, "qweight"))
    assert _integer_ops(p).count("MatMulInteger") == n_linear
    assert export_info(p)["float_layers"] == [conv]
    assert _compare(q, float_model, p) == n_linear


@pytest.mark.parametrize("fast_gelu", [False, True])
def test_fused_export_moves_the_gelu_bias_into_the_integer_gemm(tiny_bert, tmp_path, fast_gelu):
    """The FFN-in bias goes to the integer GEMM (ONNX Runtime folds the Add into DynamicQuantizeMatMul) and
    the activation runs unbiased (the cheaper kernel); the file still computes sparsa's simulation."""
    import onnxruntime as ort

    q = tiny_bert.clone()
    quantize_(q, QuantConfig(bits=7, clip="search", activations="dynamic", act_scheme="asym"))
    p = export_onnx(q, tmp_path / "m.onnx", seq_len=12, fuse=True, skip_layernorm=False, fast_gelu=fast_gelu)
    act = "FastGelu" if fast_gelu else "Gelu"
    ops = [n.op_type for n in onnx.load(str(p)).graph.node]
    assert "BiasGelu" not in ops and ops.count(act) == 2  # one per layer
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
    g = onnx.load(str(tmp_path / "opt.onnx")).graph
    producer = {o: n for n in g.node for o in n.output}
    acts = [n for n in g.node if n.op_type == act]
    assert len(acts) == 2 and all(len(n.input) == 1 for n in acts)
    gemms = [producer[n.input[0]] for n in acts]
    assert all(m.op_type == "DynamicQuantizeMatMul" and len(m.input) == 5 and m.input[4] for m in gemms)
    if not fast_gelu:  # FastGelu is ORT's approximation, not the simulation's erf GELU
        assert _compare(q, tiny_bert, p) > 0
