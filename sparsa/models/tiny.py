"""Tiny random-initialised models of every family, for fast tests (seconds, not minutes).

    from sparsa.models.tiny import tiny_model
    lm = tiny_model("swin")          # a LoadedModel, eval mode, seeded
"""

from __future__ import annotations

import torch

from sparsa.models.loaded import LoadedModel
from sparsa.models.store import from_module

TINY = ("bert", "vit", "swin", "videomae", "conv", "video-conv", "roberta", "electra", "distilbert", "deit")


def tiny_model(family: str, seed: int = 0, num_labels: int = 3) -> LoadedModel:
    """A small random model of `family` (HF classifiers for the image/video families, base models for
    text); "roberta", "electra" and "deit" load into the bert / vit families, whose layouts they share."""
    import transformers as tf

    torch.manual_seed(seed)
    if family == "bert":
        cfg = tf.BertConfig(vocab_size=1200, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=64)
        model = tf.BertModel(cfg)
    elif family == "roberta":
        cfg = tf.RobertaConfig(vocab_size=1200, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=64, max_position_embeddings=70)
        model = tf.RobertaModel(cfg)
    elif family == "electra":  # embedding width != hidden width: an embeddings_project Linear in front
        cfg = tf.ElectraConfig(vocab_size=1200, embedding_size=24, hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
        model = tf.ElectraModel(cfg)
    elif family == "distilbert":
        cfg = tf.DistilBertConfig(vocab_size=1200, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                  max_position_embeddings=64)
        model = tf.DistilBertModel(cfg)
    elif family == "deit":
        cfg = tf.DeiTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                            image_size=16, patch_size=4, num_labels=num_labels)
        model = tf.DeiTForImageClassification(cfg)
    elif family == "vit":
        cfg = tf.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                           image_size=16, patch_size=4, num_labels=num_labels)
        model = tf.ViTForImageClassification(cfg)
    elif family == "swin":
        cfg = tf.SwinConfig(image_size=16, patch_size=2, embed_dim=16, depths=[1, 1], num_heads=[2, 4],
                            window_size=4, num_labels=num_labels)
        model = tf.SwinForImageClassification(cfg)
    elif family == "videomae":
        cfg = tf.VideoMAEConfig(image_size=16, patch_size=8, num_frames=4, tubelet_size=2, hidden_size=32,
                                num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_labels=num_labels)
        model = tf.VideoMAEForVideoClassification(cfg)
    elif family == "conv":
        from sparsa.models.zoo import TinyCNN

        model = TinyCNN(num_classes=num_labels, image_size=16, width=8, hidden=16)
    elif family == "video-conv":
        from sparsa.models.zoo import TinyVideoNet

        model = TinyVideoNet(num_classes=num_labels, frames=4, image_size=16, stem_channels=(8, 16), dim=32,
                             depth=2, num_heads=4, mlp_ratio=2.0)
    else:
        raise ValueError(f"no tiny model for {family!r}; choose from {TINY}")
    _randomise_norms(model)
    return from_module(model, source=f"tiny-{family}")


@torch.no_grad()
def _randomise_norms(model: torch.nn.Module) -> None:
    """Give BatchNorm/LayerNorm non-trivial statistics and affine terms, so tests can see them."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.copy_(torch.randn(n, generator=g) * 0.1)
        elif isinstance(m, torch.nn.LayerNorm) and m.elementwise_affine:
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
