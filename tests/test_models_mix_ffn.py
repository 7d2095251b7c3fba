"""SegFormer (MiT) and PVT-v2: Mix-FFN (fc1 -> depthwise conv -> fc2) and sequence-reduction attention.

Before: pruning the FFN sliced fc1 and fc2 but not the depthwise conv between them (the model's forward
failed, exit 3); SegFormer's heads were held fixed because its sequence-reduction conv's 2x2 kernel
matched the head count; PVT-v2 was refused (its output projection is called `proj`), and once found,
its heads looked prunable although its forward reshapes to the hidden size (a probe now keeps them)."""

from __future__ import annotations

import pytest
import torch

from sparsa.metrics import count_macs
from sparsa.models import discovery, from_module, load
from sparsa.prune import PrunePlan, prune

MIT = dict(image_size=16, num_channels=3, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1],
           hidden_sizes=[32, 32], patch_sizes=[3, 3], strides=[2, 2], num_attention_heads=[2, 2], mlp_ratios=[2, 2])


def _build(name):
    import transformers as tf

    torch.manual_seed(0)
    if name == "segformer":
        return tf.SegformerForImageClassification(tf.SegformerConfig(num_labels=3, **MIT))
    return tf.PvtV2ForImageClassification(tf.PvtV2Config(num_labels=3, **MIT))


def _out(lm, x):
    with torch.no_grad():
        return lm.model(**x).logits


@pytest.mark.parametrize("name", ["segformer", "pvt_v2"])
def test_mix_ffn_and_heads_prune_exactly_and_reload(name, tmp_path):
    lm = from_module(_build(name).eval(), source=f"tiny-{name}")
    d = lm.describe()
    heads = name == "segformer"  # PVT-v2's forward reshapes its context to the hidden size
    assert lm.family == "discovered" and ("heads_fixed" in d) != heads
    if not heads:
        assert all("fails with one head fewer" in why for why in d["heads_fixed"].values())
    assert d["heads_per_layer"] == [2, 2] and d["ffn_per_layer"] == [64, 64]
    assert all(len(g.per_channel) == 1 for g in lm.adapter.ffn_groups())  # the depthwise conv
    x = lm.example_inputs(batch=2)
    assert torch.equal(_out(prune(lm, PrunePlan(heads=0.0, ffn=0.0)), x), _out(lm, x))
    small = prune(lm, PrunePlan(heads=0.5 if heads else 0.0, ffn=0.5))
    sd = small.describe()
    assert sd["heads_per_layer"] == ([1, 1] if heads else [2, 2])
    assert sd["ffn_per_layer"] == [32, 32]  # now as wide as the model
    assert count_macs(small.model, x) < count_macs(lm.model, x)
    ys = _out(small, x)
    discovery._CACHE.clear()  # a fresh process: the FFN and its conv are read back from the config
    back = load(small.save(tmp_path / "pruned"))
    assert back.describe() == sd
    assert torch.equal(_out(back, x), ys)
    assert prune(back, PrunePlan(ffn=0.5)).describe()["ffn_per_layer"] == [16, 16]  # and prunes again


def test_sequence_reduced_keys_under_dynamic_attention_are_refused_naming_the_module():
    """SegFormer's keys come from a sequence-reduced input: HDP's square blocks do not apply. The
    refusal names the module and the two lengths, with a hint (before: no module, no hint)."""
    from sparsa.attention import collect_masks
    from sparsa.errors import SparsaError

    lm = from_module(_build("segformer").eval())
    with pytest.raises(SparsaError, match=r"SegformerAttention attends 64 queries to 16 keys") as e:
        collect_masks(lm, lm.example_inputs(batch=1), "hdp")
    assert "without --attention" in e.value.hint
