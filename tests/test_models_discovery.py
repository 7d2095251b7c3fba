"""Structural discovery: HF encoders that no hand-written family names (ViViT, TimeSformer, DINOv2, YOLOS,
BEiT with relative-position bias, DeBERTa-v2, ERNIE, MPNet) prune, save/reload, quantize, take dynamic
attention where their attention calls transformers' interface or sparsa's generic attention forward can
stand in for it (TimeSformer), and simulate; tiny random configs.

Float comparisons: pruning nothing and save/reload must be bit-exact (same ops on the same weights);
dense attention through sparsa's path differs from transformers' SDPA only by float32 summation order
(|diff| <= 1e-5 on activations of order 1)."""

from __future__ import annotations

import json

import pytest
import torch

from sparsa.attention import collect_masks, install, uninstall
from sparsa.attention.install import attention_modules
from sparsa.errors import SparsaError
from sparsa.hw.sim import simulate
from sparsa.hw.workload import from_model
from sparsa.metrics import count_macs
from sparsa.models import FAMILIES, discovery, from_module, load
from sparsa.prune import PrunePlan, prune
from sparsa.quant.stage import quantize_loaded

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def _build(name: str):
    import transformers as tf

    torch.manual_seed(0)
    if name == "vivit":
        return tf.VivitForVideoClassification(tf.VivitConfig(image_size=16, num_frames=4, tubelet_size=[2, 8, 8],
                                                             num_labels=3, **SMALL))
    if name == "timesformer":
        return tf.TimesformerForVideoClassification(tf.TimesformerConfig(image_size=16, patch_size=8, num_frames=2,
                                                                         num_labels=3, **SMALL))
    if name == "dinov2":
        return tf.Dinov2Model(tf.Dinov2Config(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                              num_attention_heads=2, mlp_ratio=2))
    if name == "yolos":
        return tf.YolosModel(tf.YolosConfig(image_size=[16, 16], patch_size=8, num_detection_tokens=2, **SMALL))
    if name == "beit":  # a per-layer relative-position-bias table: one column per head
        return tf.BeitForImageClassification(tf.BeitConfig(image_size=16, patch_size=8, num_labels=3,
                                                           use_relative_position_bias=True, **SMALL))
    if name == "deberta-v2":
        return tf.DebertaV2Model(tf.DebertaV2Config(vocab_size=100, max_position_embeddings=40, **SMALL))
    if name == "ernie":
        return tf.ErnieModel(tf.ErnieConfig(vocab_size=100, max_position_embeddings=40, **SMALL))
    if name == "rembert":  # attention computed in the module: sparsa's generic attention forward stands in
        return tf.RemBertModel(tf.RemBertConfig(vocab_size=100, max_position_embeddings=40, input_embedding_size=16,
                                                output_embedding_size=16, **SMALL))
    if name == "siglip":  # a vision tower with a pooling head (nn.MultiheadAttention) beside the layers
        return tf.SiglipVisionModel(tf.SiglipVisionConfig(image_size=16, patch_size=8, **SMALL))
    if name == "swinv2":  # per-head continuous position bias (an MLP) and logit scale
        return tf.Swinv2Model(tf.Swinv2Config(image_size=16, patch_size=4, embed_dim=16, depths=[1, 1],
                                              num_heads=[2, 2], window_size=2))
    if name == "mpnet":  # one relative-attention-bias table shared by every layer
        return tf.MPNetModel(tf.MPNetConfig(vocab_size=100, max_position_embeddings=40, **SMALL))
    raise ValueError(name)


FAMS = ("vivit", "timesformer", "dinov2", "yolos", "beit", "deberta-v2", "ernie", "mpnet", "rembert", "siglip")
HEADS_FIXED = {"mpnet": "share encoder.relative_attention_bias"}
# attention computed inside the module, with terms the generic attention forward cannot reproduce
NO_INTERFACE = {"deberta-v2": ("DisentangledSelfAttention", "relative_pos"),
                "mpnet": ("MPNetSelfAttention", "position_bias")}


def _lm(name):
    return from_module(_build(name), source=f"tiny-{name}")


def _out(lm, x):
    with torch.no_grad():
        y = lm.model(**x)
    return y.logits if hasattr(y, "logits") else y.last_hidden_state


@pytest.mark.parametrize("name", FAMS)
def test_discovered_family_prunes_exactly_and_reloads(name, tmp_path):
    lm = _lm(name)
    mt = lm.config.model_type
    assert lm.family == "discovered" and not any(mt in f.hf_model_types for f in FAMILIES.values())
    d = lm.describe()
    assert d["layers"] == 2 and d["ffn_per_layer"] == [64, 64] and all(h == 2 for h in d["heads_per_layer"])
    x = lm.example_inputs(batch=2, seq_len=12)
    y = _out(lm, x)
    assert torch.equal(_out(prune(lm, PrunePlan(heads=0.0, ffn=0.0)), x), y)
    fixed = name in HEADS_FIXED
    if fixed:  # the heads stay, and pruning them says why
        assert HEADS_FIXED[name] in next(iter(d["heads_fixed"].values()))
        with pytest.raises(SparsaError, match="no prunable heads") as e:
            prune(lm, PrunePlan(heads=0.5))
        assert HEADS_FIXED[name] in e.value.message
    small = prune(lm, PrunePlan(heads=0.0 if fixed else 0.5, ffn=0.5))
    sd = small.describe()
    assert sd["ffn_per_layer"] == [32, 32]
    assert sd["heads_per_layer"] == d["heads_per_layer"] if fixed else all(h == 1 for h in sd["heads_per_layer"])
    ys = _out(small, x)
    discovery._CACHE.clear()  # as in a fresh process: the FFNs (pruned to the model width) are read back
    back = load(small.save(tmp_path / "pruned"))
    assert back.family == "discovered" and back.describe() == sd
    assert torch.equal(_out(back, x), ys)


@pytest.mark.parametrize("name", ["vivit", "timesformer", "ernie"])
def test_save_pretrained_folder_loads_by_discovery(name, tmp_path):
    model = _build(name).eval()
    model.save_pretrained(tmp_path / "hf")
    lm = load(tmp_path / "hf")
    assert lm.family == "discovered"
    x = lm.example_inputs(batch=1, seq_len=8)
    with torch.no_grad():
        ref = model(**x)
    ref = ref.logits if hasattr(ref, "logits") else ref.last_hidden_state
    assert torch.equal(_out(lm, x), ref)


@pytest.mark.parametrize("name", ["vivit", "timesformer", "dinov2", "deberta-v2"])
def test_discovered_family_quantizes_and_reloads(name, tmp_path):
    lm = _lm(name)
    x = lm.example_inputs(batch=2, seq_len=12)
    y = _out(lm, x)
    q, _ = quantize_loaded(lm.clone())
    yq = _out(q, x)
    # INT8 weights on a 2-layer random model: the output direction barely moves (measured >= 0.999)
    assert torch.nn.functional.cosine_similarity(yq.flatten(), y.flatten(), dim=0) > 0.99
    assert torch.equal(_out(load(q.save(tmp_path / "q")), x), yq)


@pytest.mark.parametrize("name", [n for n in FAMS if n not in NO_INTERFACE])
def test_discovered_family_takes_hdp(name):
    lm = _lm(name)
    x = lm.example_inputs(batch=2, seq_len=12)
    y = _out(lm, x)
    ctrl = install(lm.model, "dense")
    assert torch.allclose(_out(lm, x), y, atol=1e-5)
    calls = 4 if name == "timesformer" else 2  # TimeSformer: a temporal and a spatial attention per layer
    assert len(ctrl.layer_stats) == len(attention_modules(lm.model)) == calls
    uninstall(lm.model)
    masks = collect_masks(lm, x, "hdp")
    assert len(masks) == calls and all(m["head_mask"].shape[1] == 2 for m in masks)
    assert torch.equal(_out(lm, x), y)  # left as it was


@pytest.mark.parametrize("name", sorted(NO_INTERFACE))
def test_attention_computed_in_the_module_is_refused_clearly(name):
    lm = _lm(name)
    with pytest.raises(SparsaError, match="computes its attention scores itself") as e:
        install(lm.model, "hdp")
    cls, why = NO_INTERFACE[name]
    assert cls in e.value.message and why in e.value.message and "register_family" in e.value.hint
    assert getattr(lm.model, "_sparsa_ctrl", None) is None


@pytest.mark.parametrize("name", FAMS)
def test_discovered_family_simulates(name):
    lm = _lm(name)
    w = from_model(lm)
    assert w.dense_macs == count_macs(lm.model, lm.example_inputs(batch=1)) == w.meta["flop_counter_macs"]
    assert simulate(w, "systolic-32-os").macs == w.dense_macs


def test_decoder_and_unknown_layouts_are_clear_errors(tmp_path):
    import transformers as tf

    with pytest.raises(SparsaError, match="discovery found no encoder attention in GPT2Model") as e:
        from_module(tf.GPT2Model(tf.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=100)))
    assert "register_family" in e.value.hint
    folder = tmp_path / "gpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 32, "n_layer": 1, "n_head": 2}))
    with pytest.raises(SparsaError, match="unknown model family: .*gpt2.*discovery found no encoder attention"):
        load(folder)
    hf = tmp_path / "vivit"
    _build("vivit").save_pretrained(hf)
    cfg = json.loads((hf / "config.json").read_text())
    cfg["architectures"] = ["Trainer"]  # not a transformers model class: never built
    (hf / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SparsaError, match="not allowed for family 'discovered'"):
        load(hf)


def test_text_attention_mask_reaches_the_generic_attention_forward():
    lm = _lm("rembert")
    x = lm.example_inputs(batch=2, seq_len=12)
    x["attention_mask"][1, 7:] = 0  # padding: the masked keys must stay masked through sparsa's path
    y = _out(lm, x)
    install(lm.model, "dense")
    got = _out(lm, x)
    uninstall(lm.model)
    assert torch.allclose(got[0], y[0], atol=1e-5) and torch.allclose(got[1, :7], y[1, :7], atol=1e-5)


def test_per_head_position_bias_mlp_keeps_heads_and_still_quantizes(tmp_path):
    lm = _lm("swinv2")
    assert all("logit_scale" in why for why in lm.describe()["heads_fixed"].values())
    with pytest.raises(SparsaError, match="no prunable heads.*one entry per head"):
        prune(lm, PrunePlan(heads=0.5))
    x = lm.example_inputs(batch=1)
    q, _ = quantize_loaded(lm.clone())
    assert torch.equal(_out(load(q.save(tmp_path / "q")), x), _out(q, x))


def test_audio_model_is_refused_naming_its_input():
    import transformers as tf

    model = tf.Wav2Vec2Model(tf.Wav2Vec2Config(conv_dim=[8, 8], conv_stride=[5, 2], conv_kernel=[10, 3],
                                               num_conv_pos_embeddings=4, **SMALL))
    with pytest.raises(SparsaError, match="Wav2Vec2Model takes input_values") as e:
        from_module(model)
    assert "register_family" in e.value.hint


def _gated(name: str):
    import transformers as tf

    torch.manual_seed(0)
    ids = dict(vocab_size=100, max_position_embeddings=40, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if name == "modernbert":  # Wi holds the GLU's two halves (32 -> 2*64), Wo maps 64 back
        return tf.ModernBertModel(tf.ModernBertConfig(cls_token_id=1, sep_token_id=2, **ids, **SMALL))
    if name == "eurobert":  # gate_proj and up_proj (32 -> 64 each), down_proj
        return tf.EuroBertModel(tf.EuroBertConfig(**ids, num_key_value_heads=2, **SMALL))
    raise ValueError(name)


@pytest.mark.parametrize("name", ["modernbert", "eurobert"])
def test_gated_ffns_prune_exactly_and_reload(name, tmp_path):
    """A gated FFN, act(gate(x)) * up(x) then down: neuron j is row j of the gate and up projections (of
    each half of a Linear holding both) and column j of down. It used to be refused as 'no prunable ffn'.
    The pruned model equals the dense one with those columns of down fed zeros."""
    from sparsa.prune.equivalence import zeroed_consumers
    from sparsa.prune.structured import apply_keep

    lm = from_module(_gated(name))
    d = lm.describe()
    assert d["ffn_per_layer"] == [64, 64] and "ffn_missing" not in d
    x = lm.example_inputs(batch=2, seq_len=12)
    keep = {"ffn": {g.name: list(range(0, 64, 3)) for g in lm.adapter.ffn_groups()}}
    with zeroed_consumers(lm, keep):
        want = _out(lm, x)
    small = lm.clone()
    apply_keep(small, keep)
    small.adapter.after_surgery()
    assert small.describe()["ffn_per_layer"] == [22, 22]
    assert torch.allclose(_out(small, x), want, atol=1e-5, rtol=1e-4)
    assert count_macs(small.model, x) < count_macs(lm.model, x)
    discovery._CACHE.clear()  # as in a fresh process: the gated layout is read back from the config
    back = load(small.save(tmp_path / "pruned"))
    assert back.describe()["ffn_per_layer"] == [22, 22]
    assert torch.equal(_out(back, x), _out(small, x))
    w = from_model(back)
    assert w.dense_macs == count_macs(back.model, back.example_inputs(batch=1)) == w.meta["flop_counter_macs"]
    assert w.meta["ffn_per_layer"] == [22, 22] and simulate(w, "systolic-32-os").macs == w.dense_macs


def test_several_ffns_per_layer_are_named_by_info_and_prune():
    # MobileBERT's bottleneck layers hold several FFNs: `--ffn` used to be refused with "no prunable ffn"
    # and no reason, and `info` just showed no FFN sizes
    import transformers as tf

    torch.manual_seed(0)
    lm = from_module(tf.MobileBertModel(tf.MobileBertConfig(vocab_size=100, max_position_embeddings=40,
                                                           embedding_size=32, intra_bottleneck_size=16,
                                                           true_hidden_size=16, **SMALL)))
    missing = lm.describe()["ffn_missing"]
    assert set(missing) == {"encoder.layer.0", "encoder.layer.1"} and "several FFNs" in missing["encoder.layer.0"]
    with pytest.raises(SparsaError, match="no prunable ffn .*several FFNs"):
        prune(lm, PrunePlan(ffn=0.5))
    assert "ffn_missing" not in _lm("ernie").describe()


def test_unreadable_attention_error_names_the_module_holding_the_projections():
    # the first module named like attention may be a helper (Funnel's position-encoding structure, two
    # Dropouts): the error named it, not the attention holding the unrecognised projections
    class PosAttentionStructure(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = torch.nn.Dropout(0.1)

    class OddAttention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.aa, self.bb, self.cc = (torch.nn.Linear(8, 8) for _ in range(3))

    model = torch.nn.Sequential(PosAttentionStructure(), OddAttention())
    with pytest.raises(SparsaError, match=r"1 \(OddAttention\) holds aa \(Linear\)"):
        discovery.discover(model)


def test_funnel_is_discovered_through_its_q_head_and_post_proj_names():
    # Funnel names its projections q_head/k_head/v_head/post_proj: discovery found no attention at all (refused);
    # its heads stay (relative-attention biases per head, no stored head count), its FFNs prune exactly
    import transformers as tf

    torch.manual_seed(0)
    cfg = tf.FunnelConfig(vocab_size=100, block_sizes=[1, 1], d_model=32, n_head=2, d_head=16, d_inner=64)
    lm = from_module(tf.FunnelModel(cfg).eval())
    d = lm.describe()
    assert d["ffn_per_layer"] == [64] * 4 and len(d["heads_fixed"]) == 4
    x = lm.example_inputs(batch=1, seq_len=16)
    assert torch.equal(_out(prune(lm, PrunePlan(ffn=0.0)), x), _out(lm, x))
    assert prune(lm, PrunePlan(ffn=0.5)).describe()["ffn_per_layer"] == [32] * 4


def test_second_projections_to_the_heads_width_keep_the_heads():
    # Longformer's attention holds query_global/key_global/value_global beside query/key/value: head pruning
    # sliced only the latter, and the pruned model failed in its own forward (exit 3 after `sparsa prune`)
    import transformers as tf

    torch.manual_seed(0)
    lm = from_module(tf.LongformerModel(tf.LongformerConfig(vocab_size=100, max_position_embeddings=50, pad_token_id=1,
                                                            attention_window=4, **SMALL)))
    fixed = lm.describe()["heads_fixed"]
    assert len(fixed) == 2 and all("query_global [32 -> 32]" in why for why in fixed.values())
    with pytest.raises(SparsaError, match="no prunable heads.*query_global"):
        prune(lm, PrunePlan(heads=0.5))
    x = lm.example_inputs(batch=1, seq_len=16)
    small = prune(lm, PrunePlan(ffn=0.5))
    assert _out(small, x).shape == _out(lm, x).shape


def test_token_types_without_a_type_table_are_example_inputs_and_reach_the_onnx_file(tmp_path):
    # XLM declares no type_vocab_size and adds token types through its word table: the example inputs (and so
    # the ONNX file) left them out, the file dropped the tokenizer's zeros, and eval's ONNX cosine read 0.3
    import transformers as tf

    from sparsa.quant.export import export_onnx
    from sparsa.quant.onnx_model import OnnxModel

    torch.manual_seed(0)
    lm = from_module(tf.XLMModel(tf.XLMConfig(vocab_size=100, emb_dim=32, n_layers=1, n_heads=2,
                                              max_position_embeddings=40)).eval())
    x = lm.example_inputs(batch=2, seq_len=8)
    assert "token_type_ids" in x
    q, _ = quantize_loaded(lm.clone())
    f = OnnxModel(export_onnx(q, tmp_path / "m.onnx", seq_len=8), q.adapter)
    assert "token_type_ids" in f.input_names
    got, want = f(**x).last_hidden_state, _out(q, x)
    assert torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0) > 0.999


def test_ffn_in_a_parallel_layer_list_prunes_and_reloads(tmp_path):
    # XLM keeps attentions[i] and ffns[i] in separate ModuleLists: no FFN was found in "attentions.i"
    import transformers as tf

    torch.manual_seed(0)
    lm = from_module(tf.XLMModel(tf.XLMConfig(vocab_size=100, emb_dim=32, n_layers=2, n_heads=2,
                                              max_position_embeddings=40)).eval())
    assert lm.describe()["ffn_per_layer"] == [128, 128] and "ffn_missing" not in lm.describe()
    small = prune(lm, PrunePlan(heads=0.5, ffn=0.5))
    assert small.describe()["ffn_per_layer"] == [64, 64]
    x = lm.example_inputs(batch=1, seq_len=12)
    discovery._CACHE.clear()
    assert torch.equal(_out(load(small.save(tmp_path / "p")), x), _out(small, x))


def test_a_models_own_linear_like_class_is_not_taken_for_a_linear():
    # I-BERT's QuantLinear has in/out_features: discovery took it for a Linear, and `sparsa prune` then
    # failed with "cannot slice a QuantLinear" (exit 3); now the model is refused naming its attention
    import transformers as tf

    cfg = tf.IBertConfig(vocab_size=100, max_position_embeddings=40, pad_token_id=1, **SMALL)
    with pytest.raises(SparsaError, match=r"IBertSelfAttention\) holds query \(QuantLinear\)"):
        from_module(tf.IBertModel(cfg))


def test_a_text_model_without_vocab_size_is_a_clear_error():
    # CANINE reads code points (no vocab_size): `sparsa info` stopped with an AttributeError (exit 3)
    import transformers as tf

    cfg = tf.CanineConfig(downsampling_rate=4, num_hash_functions=2, num_hash_buckets=64, local_transformer_stride=16,
                          max_position_embeddings=256, **SMALL)
    with pytest.raises(SparsaError, match="declares no vocab_size"):
        from_module(tf.CanineModel(cfg)).example_inputs()
