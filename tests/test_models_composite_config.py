"""An image classifier whose config is composite (SiglipConfig: the input size is in `vision_config`).

Before: discovery took it for a text model (no top-level image_size) and asked the config for a
vocab_size, so `sparsa info` died with exit 3 (AttributeError)."""

from __future__ import annotations

import torch

from sparsa.models import from_module
from sparsa.prune import PrunePlan, prune


def test_composite_config_image_classifier_takes_images_at_its_vision_size():
    import transformers as tf

    torch.manual_seed(0)
    vision = dict(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64)
    text = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    model = tf.SiglipForImageClassification(tf.SiglipConfig(vision_config=vision, text_config=text, num_labels=3))
    lm = from_module(model.eval())
    assert lm.modality == "image"
    x = lm.example_inputs(batch=2)
    assert list(x) == ["pixel_values"] and x["pixel_values"].shape == (2, 3, 16, 16)
    assert lm.data_options()["image_size"] == [16, 16]
    small = prune(lm, PrunePlan(heads=0.5, ffn=0.5))
    with torch.no_grad():
        assert small.model(**x).logits.shape == (2, 3)


def test_pixel_model_without_an_image_size_is_refused_clearly():
    """SigLIP-2's vision tower takes pre-patchified pixels and their shapes: no image_size to make
    images from (before: taken for a text model, AttributeError on vocab_size, exit 3)."""
    import pytest
    import transformers as tf

    from sparsa.errors import SparsaError

    model = tf.Siglip2VisionModel(tf.Siglip2VisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                         intermediate_size=64, patch_size=8, num_patches=4))
    with pytest.raises(SparsaError, match="takes pixel_values but its config states no image_size"):
        from_module(model)
