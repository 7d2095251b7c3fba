"""sparsa's generic attention forward (sparsa.models.attention_forward): it stands in for attention modules
that compute softmax(q·kᵀ)·v themselves (TimeSformer's fused qkv), so they take dynamic attention and lose
heads; modules it cannot reproduce are refused with the reason. Tiny random configs.

Float bounds: the generic forward runs PyTorch's SDPA where the module ran matmul-softmax-matmul; in
float32 on activations of order 1 the two differ by summation order only (measured < 1e-6; bound 1e-5)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsa.attention import collect_masks
from sparsa.hw.sim import simulate
from sparsa.hw.workload import from_model
from sparsa.models import from_module, load
from sparsa.models.attention_forward import generic_attention_forward, is_wrapped, probe
from sparsa.prune import PrunePlan, prune
from sparsa.prune.equivalence import zeroed_consumers
from sparsa.prune.importance import compute_importance
from sparsa.prune.operators import UnstructuredOperator

BOUND = 1e-5


def _timesformer(heads: int = 4):
    import transformers as tf

    torch.manual_seed(0)
    cfg = tf.TimesformerConfig(image_size=16, patch_size=8, num_frames=2, num_labels=3, hidden_size=32,
                               num_hidden_layers=2, num_attention_heads=heads, intermediate_size=64)
    return from_module(tf.TimesformerForVideoClassification(cfg), source="tiny-timesformer")


@pytest.fixture(autouse=True)
def _fresh_discovery(monkeypatch):
    # layouts are cached per module tree: a pruned model reloaded in a fresh process is discovered anew
    from sparsa.models import discovery

    monkeypatch.setattr(discovery, "_CACHE", {})


def _fresh_load(folder):
    from sparsa.models import discovery

    discovery._CACHE.clear()
    return load(folder)


def _logits(lm, x):
    with torch.no_grad():
        return lm.model(**x).logits


def test_generic_forward_reproduces_timesformer_attention_modules():
    lm = _timesformer()
    specs = lm.adapter.generic_forwards()
    assert len(specs) == 4 and all(s.fused and s.q == "qkv" for s in specs.values())  # temporal + spatial, 2 layers
    x = torch.randn(3, 7, 32, generator=torch.Generator().manual_seed(0))
    for name, spec in specs.items():
        m = lm.model.get_submodule(name)
        with torch.no_grad():
            ref = m(x)[0]
            ref_ctx, ref_probs = m(x, output_attentions=True)
            m._sparsa_wrap = spec
            got = generic_attention_forward(m, x)
            got_ctx, got_probs = generic_attention_forward(m, x, output_attentions=True)
        del m._sparsa_wrap
        assert len(got) == 1 and (got[0] - ref).abs().max() <= BOUND
        # asked for them, the probabilities come second, as the module's own forward gives them
        assert got_probs.shape == ref_probs.shape and (got_probs - ref_probs).abs().max() <= BOUND
        assert (got_ctx - ref_ctx).abs().max() <= BOUND


def test_timesformer_heads_prune_through_the_fused_qkv_like_zeroed_heads(tmp_path):
    lm = _timesformer()
    groups = lm.adapter.groups("heads")
    assert len(groups) == 4 and all(g.fused for g in groups)
    keep = {"heads": {g.name: [1, 3] if i % 2 else [0] for i, g in enumerate(groups)}}
    x = lm.example_inputs(batch=2)
    with zeroed_consumers(lm, keep):  # the unpruned model with the dropped heads' outputs forced to 0
        ref = _logits(lm, x)
    small = prune(lm, PrunePlan(keep=keep))
    assert small.describe()["heads_per_layer"] == [1, 2, 1, 2]
    for i, g in enumerate(groups):
        m = small.model.get_submodule(g.name)
        assert is_wrapped(m) and m.qkv.out_features == 3 * 8 * len(keep["heads"][g.name])
    got = _logits(small, x)
    assert (got - ref).abs().max() <= BOUND
    # the kept rows are those of the kept heads in each of q, k and v: compare with the original weights
    w0 = lm.model.get_submodule(groups[1].name).qkv.weight.reshape(3, 4, 8, 32)
    assert torch.equal(small.model.get_submodule(groups[1].name).qkv.weight.reshape(3, 2, 8, 32), w0[:, [1, 3]])
    back = _fresh_load(small.save(tmp_path / "pruned"))
    assert back.describe() == small.describe() and torch.equal(_logits(back, x), got)
    assert not is_wrapped(lm.model.get_submodule(groups[0].name))  # the original is left as it was


def test_pruned_timesformer_takes_hdp_and_simulates_under_its_masks(tmp_path):
    lm = _fresh_load(prune(_timesformer(), PrunePlan(heads=0.5, ffn=0.5)).save(tmp_path / "p"))
    x = lm.example_inputs(batch=1)
    y = _logits(lm, x)
    masks = collect_masks(lm, x, "hdp")
    assert len(masks) == 4 and all(m["head_mask"].shape[1] == 2 for m in masks)
    assert torch.equal(_logits(lm, x), y)  # the pruned forward stays after uninstall
    w = from_model(lm, masks=masks, inputs=x)
    dense = from_model(lm, inputs=x)
    assert w.meta["attention"] == "masked" and w.meta["attention_calls"] == 4
    # one entry per attention module (temporal + spatial a layer) and per FFN, as the model describes itself
    assert w.meta["heads_per_layer"] == lm.describe()["heads_per_layer"] and len(w.meta["heads_per_layer"]) == 4
    assert w.meta["ffn_per_layer"] == lm.describe()["ffn_per_layer"] and len(w.meta["ffn_per_layer"]) == 2
    # the masked attention (HDP's integer pass over every block + the kept blocks) replaces the dense one
    assert w.meta["flop_counter_macs"] == dense.meta["flop_counter_macs"] == dense.dense_macs
    assert simulate(w, "systolic-32-os").macs != simulate(dense, "systolic-32-os").macs


def test_fused_heads_are_scored_and_listed_once():
    lm = _timesformer()
    scores = compute_importance(lm, "l1_group", groups={"heads": lm.adapter.groups("heads")})["heads"]
    assert all(s.shape == (4,) for s in scores.values())
    qkv = lm.model.get_submodule(lm.adapter.groups("heads")[0].q).weight
    expect = qkv.detach().reshape(3, 4, -1).abs().sum((0, 2))  # each head's rows in q, k and v
    o = lm.model.get_submodule(lm.adapter.groups("heads")[0].o).weight.detach()
    expect = expect + o.reshape(32, 4, 8).abs().sum((0, 2))
    assert torch.allclose(next(iter(scores.values())), expect)
    slots = UnstructuredOperator(lm).slots
    assert len(slots) == len(set(slots))


class _Attn(nn.Module):
    """Q/K/V Linears and a head count, with a forward that adds something of its own."""

    def __init__(self, extra: str):
        super().__init__()
        self.num_heads, self.extra = 2, extra
        self.query, self.key, self.value = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
        if extra == "parameter":
            self.temperature = nn.Parameter(torch.ones(()))

    def forward(self, hidden_states):
        B, N, _ = hidden_states.shape
        q, k, v = (p(hidden_states).view(B, N, 2, 4).transpose(1, 2) for p in (self.query, self.key, self.value))
        s = q @ k.transpose(-1, -2) / 2.0  # 1/sqrt(4)
        if self.extra == "doubled":
            s = 2 * s
        return ((s.softmax(-1) @ v).transpose(1, 2).reshape(B, N, 8),)


def test_probe_accepts_plain_attention_and_refuses_what_it_cannot_reproduce():
    spec = probe(_Attn("none"), "query", "key", "value", "num_heads")
    assert not isinstance(spec, str) and spec.returns == 1 and not spec.fused
    why = probe(_Attn("doubled"), "query", "key", "value", "num_heads")
    assert isinstance(why, str) and "differs from softmax" in why
    why = probe(_Attn("parameter"), "query", "key", "value", "num_heads")
    assert isinstance(why, str) and "temperature" in why
    assert "no head count" in probe(_Attn("none"), "query", "key", "value", None)


def test_unreadable_attention_layout_names_the_module_and_the_override():
    import transformers as tf

    from sparsa.errors import SparsaError

    model = tf.ViTModel(tf.ViTConfig(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64))
    att = model.layers[0].attention
    for name in ("q_proj", "k_proj", "v_proj"):  # projections under names discovery does not know
        setattr(att, "to_" + name[0], att._modules.pop(name))
    model.config.model_type = "vit-renamed"
    with pytest.raises(SparsaError, match=rf"layers.0.attention \({type(att).__name__}\) holds o_proj .*to_q") as e:
        from_module(model)
    assert "register_family" in e.value.hint
