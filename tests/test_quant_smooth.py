"""SmoothQuant laid out on BERT (sparsa.quant.smooth): exact in float, smaller activation error, fused export."""

import numpy as np
import onnx
import pytest
import torch

from sparsa.errors import SparsaError
from sparsa.quant import QuantConfig, quantize_
from sparsa.quant.api import _SmoothedLinear, _set_submodule
from sparsa.quant.calibrate import collect
from sparsa.quant.embeddings import with_quantized_embeddings
from sparsa.quant.export import export_onnx, onnx_session
from sparsa.quant.primitives import choose_qparams, dequantize, quantize
from sparsa.quant.smooth import bert_layer_prefixes, plan_bert_smoothing, smooth_scale


@pytest.fixture(scope="module")
def tiny_bert():
    from transformers import BertConfig, BertModel

    from sparsa.models import from_module

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=1100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)
    m = BertModel(cfg).eval()
    with torch.no_grad():  # outlier channels, as trained BERTs have in their LayerNorm outputs
        for ln in [m.embeddings.LayerNorm] + [lay.attention.output.LayerNorm for lay in m.encoder.layer]:
            ln.weight[[3, 17]] *= 25.0
        for lay in m.encoder.layer:  # and in the context (through V)
            lay.attention.self.value.weight[[5, 20]] *= 25.0
    return from_module(m)


def _calib(lm, n=4):
    g = torch.Generator().manual_seed(1)
    return [{"input_ids": torch.randint(0, 1100, (1, 12), generator=g),
             "attention_mask": torch.ones(1, 12, dtype=torch.long)} for _ in range(n)]


def _specs(alpha, names):
    cfg = QuantConfig(smooth=alpha)
    return {n: cfg.for_layer(n) for n in names}


def _out(model, batches):
    with torch.no_grad():
        return torch.cat([model(**b).last_hidden_state for b in batches])


def test_bert_smoothing_is_exact_in_float(tiny_bert):
    calib = _calib(tiny_bert)
    m = tiny_bert.clone().model
    ref = _out(m, calib)
    pre = bert_layer_prefixes(m)
    assert pre == ["encoder.layer.0", "encoder.layer.1"]
    names = [f"{p}.{k}" for p in pre for k in ("attention.self.query", "attention.self.key", "attention.self.value",
                                                 "attention.output.dense", "intermediate.dense", "output.dense")]
    v0 = m.get_submodule("encoder.layer.0.attention.self.value").weight.clone()
    scales, folded = plan_bert_smoothing(m, _specs(0.5, names), collect(m, names, calib))
    assert folded == ["encoder.layer.0.attention.output.dense", "encoder.layer.1.attention.output.dense"]
    assert not torch.equal(v0, m.get_submodule("encoder.layer.0.attention.self.value").weight)  # the fold happened
    q, k, v = (scales[f"encoder.layer.0.attention.self.{x}"] for x in ("query", "key", "value"))
    assert q is k is v and not torch.allclose(q, torch.ones_like(q))  # one shared s per Q/K/V input
    # the run-time part: x·(1/s) then W·diag(s), in float
    with torch.no_grad():
        for n, s in scales.items():
            lin = m.get_submodule(n)
            lin.weight.mul_(s.view(1, -1))
            _set_submodule(m, n, _SmoothedLinear(1.0 / s, lin))
    out = _out(m, calib)
    assert (out - ref).abs().max() / ref.abs().max() < 1e-5


def test_smoothing_reduces_per_tensor_activation_error_on_calibration_data(tiny_bert):
    """Q/K/V and attention-out, with dynamic per-tensor 8-bit activations (float weights): the layer
    outputs on the calibration inputs move closer to float with smoothing."""
    calib = _calib(tiny_bert)
    m = tiny_bert.clone().model
    layers = ["encoder.layer.0.attention.self.query", "encoder.layer.0.attention.output.dense"]
    base = collect(m, layers, calib)
    ref = {n: base[n].input_rows() @ m.get_submodule(n).weight.detach().T for n in layers}

    def act_error(x, w):
        qp = choose_qparams(x, 8, "asym", "max", None)
        return ((dequantize(quantize(x, qp), qp) @ w.T) - (x @ w.T)).pow(2).mean()

    plain = {n: act_error(base[n].input_rows(), m.get_submodule(n).weight.detach()) for n in layers}
    qkv = [f"encoder.layer.0.attention.self.{k}" for k in ("key", "value")]
    scales, _ = plan_bert_smoothing(m, _specs(0.5, layers + qkv), base)
    after = collect(m, layers, calib)  # attention-out's input is now context / s
    for n in layers:
        s = scales.get(n, torch.ones(32))
        x, w = after[n].input_rows() / s, m.get_submodule(n).weight.detach() * s.view(1, -1)
        assert torch.allclose(x @ w.T, ref[n], atol=1e-4, rtol=1e-4)  # same layer output in float
        assert act_error(x, w) < 0.5 * plain[n], n


def test_bad_alpha_and_bad_layouts_raise(tiny_bert):
    with pytest.raises(SparsaError, match=r"\[0, 1\]"):
        QuantConfig(smooth=1.5, smooth_fold=True)
    with pytest.raises(SparsaError, match=r"\[0, 1\]"):
        smooth_scale(torch.ones(4), torch.ones(2, 4), -0.1)
    with pytest.raises(SparsaError, match="smooth_fold"):
        QuantConfig(smooth_fold="yes")
    with pytest.raises(SparsaError, match="share one smoothing"):
        quantize_(tiny_bert.clone(), QuantConfig(smooth=0.5, smooth_fold=True, overrides={"*.key": {"smooth": 0.7}}),
                  calib=_calib(tiny_bert))
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 8))
    with pytest.raises(SparsaError, match="BERT-layout"):
        quantize_(mlp, QuantConfig(smooth=0.5, smooth_fold=True), calib=[{"input": torch.randn(2, 8)}])


def test_fused_export_of_bert_smoothing_matches_simulation(tiny_bert, tmp_path):
    q = tiny_bert.clone()
    # FFN-out not smoothed; the pooler is smoothed but absent from the exported graph (output: hidden states)
    quantize_(q, QuantConfig(bits=7, clip="max", activations="dynamic", act_scheme="asym", smooth=0.5,
                             smooth_fold=True, overrides={"encoder.layer.?.output.dense": {"smooth": None}}),
              calib=_calib(tiny_bert))
    assert q.model.pooler.dense.smooth_inv is not None
    p = export_onnx(q, tmp_path / "m.onnx", seq_len=12, fuse=True)
    proto = onnx.load(str(p))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QAttention") == 2 and ops.count("MatMulInteger") == 6  # attention-out, FFN-in, FFN-out
    # one Mul per layer in front of QAttention, one for FFN-in; attention-out's smoothing lives in V (no Mul)
    muls = sorted(n.name for n in proto.graph.node if n.name.endswith("_smooth"))
    assert muls == sorted([f"q_encoder_layer_{i}_attention_self_qkv_smooth" for i in (0, 1)]
                          + [f"q_encoder_layer_{i}_intermediate_dense_smooth" for i in (0, 1)]), muls
    inputs = q.example_inputs(batch=1, seq_len=12)
    s = onnx_session(p, threads=1)
    y = s.run(None, {k: v.numpy() for k, v in inputs.items() if k in {i.name for i in s.get_inputs()}})[0]
    sim = with_quantized_embeddings(q, "int8")  # the file's (default) integer embedding tables
    with torch.no_grad():
        y_sim = sim.model(**inputs).last_hidden_state.numpy()
    assert np.abs(y - y_sim).max() / np.abs(y_sim).max() < 1e-4


@pytest.fixture(scope="module")
def tiny_text_bert():
    """A tiny BERT that reads MiniLM's tokenizer (its vocabulary size), with the outliers above."""
    from transformers import BertConfig, BertModel

    from sparsa.models import from_module, load

    tok = load("minilm").tokenizer
    torch.manual_seed(0)
    m = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=64, max_position_embeddings=64)).eval()
    with torch.no_grad():
        for ln in [m.embeddings.LayerNorm] + [lay.attention.output.LayerNorm for lay in m.encoder.layer]:
            ln.weight[[3, 17]] *= 25.0
    return from_module(m, tokenizer=tok)


def test_trim_smoothing_keeps_the_muls_that_pay(tiny_text_bert):
    from sparsa.quant.api import quant_layers
    from sparsa.quant.sensitivity import trim_smoothing

    texts = [f"sentence {i} about a cat, a dog and {i * 7} apples." for i in range(8)]
    ffn_out = {f"encoder.layer.{i}.output.dense": {"smooth": 0.7, "bits": 6} for i in range(2)}
    cfg = QuantConfig(bits=7, clip="max", activations="dynamic", act_scheme="asym", smooth=0.5, smooth_fold=True,
                      overrides=ffn_out)
    # budget 0: a site goes only if dropping it does not lower the calibration cosine
    kept_cfg, rep = trim_smoothing(tiny_text_bert, cfg, texts[:4], texts[4:], budget=0.0)
    # Q/K/V share one Mul per layer, attention-out is folded into V (free): qkv, FFN-in, FFN-out per layer (+ pooler)
    assert {s for s in rep["gain"] if "encoder" in s} == {f"encoder.layer.{i}.{k}" for i in range(2)
                                                          for k in ("attention.self.qkv", "intermediate.dense", "output.dense")}
    assert rep["cosine_trimmed"] >= rep["cosine_full"]
    assert set(rep["kept"]) | set(rep["dropped"]) == set(rep["gain"]) and rep["kept"]
    # a huge budget drops every Mul; the dropped layers keep their other override fields (bits 6 on FFN-out)
    none_cfg, rep = trim_smoothing(tiny_text_bert, cfg, texts[:4], texts[4:], budget=0.99)
    assert rep["kept"] == []
    q = quantize_(tiny_text_bert.clone(), none_cfg, calib=texts[:4], calib_samples=4)
    qls = quant_layers(q)
    assert all(ql.smooth_inv is None for ql in qls.values())
    assert none_cfg.for_layer("encoder.layer.1.output.dense").bits == 6
    with pytest.raises(SparsaError, match="budget"):
        trim_smoothing(tiny_text_bert, cfg, texts[:4], texts[4:], budget=1.5)
