"""The five named Hugging Face families (BERT, DistilBERT, ViT, Swin, VideoMAE) keep hand-written
adapters for what discovery cannot decide: the inputs their forward takes (BERT's [CLS]/[SEP] ids,
DistilBERT without segment ids, video's frame axis) and RoBERTa's padded position ids. Their layout
tables must say exactly what structural discovery finds on the same module tree, so the tables are
pinned overrides, never a second opinion: any drift between the two fails here."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from sparsa.models.discovery import DiscoveredAdapter
from sparsa.models.families import FAMILIES


def _models():
    torch.manual_seed(0)
    return {
        "bert": tf.BertModel(tf.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                           intermediate_size=64)),
        "distilbert": tf.DistilBertModel(tf.DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=4,
                                                             hidden_dim=64)),
        "vit": tf.ViTForImageClassification(tf.ViTConfig(image_size=32, patch_size=8, hidden_size=32,
                                                         num_hidden_layers=2, num_attention_heads=4,
                                                         intermediate_size=64)),
        "swin": tf.SwinForImageClassification(tf.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1],
                                                             num_heads=[2, 4], window_size=4)),
        "videomae": tf.VideoMAEForVideoClassification(tf.VideoMAEConfig(image_size=32, patch_size=8, num_frames=4,
                                                                        tubelet_size=2, hidden_size=32,
                                                                        num_hidden_layers=2, num_attention_heads=4,
                                                                        intermediate_size=64)),
    }


def _heads(groups):
    return [(g.name, g.q, g.k, g.v, g.o, g.num_heads, g.head_dim, g.fused, sorted(g.per_head), g.attrs) for g in groups]


def _ffns(groups):
    return [(g.fc1, g.fc2, g.size) for g in groups]


@pytest.mark.parametrize("family", ["bert", "distilbert", "vit", "swin", "videomae"])
def test_named_family_layout_equals_what_discovery_finds(family):
    model = _models()[family]
    named = FAMILIES[family].adapter(model, model.config)
    found = DiscoveredAdapter(model, model.config)
    assert named.head_groups() and named.ffn_groups()
    assert _heads(named.head_groups()) == _heads(found.head_groups())
    assert _ffns(named.ffn_groups()) == _ffns(found.ffn_groups())
