"""A model whose forward draws random numbers (ViT-MAE shuffles patches by random noise, even at
mask_ratio 0) compared with a copy of itself: before, every forward drew different noise, so
`sparsa eval` of its unpruned INT8 copy reported output cosine 0.22 (vs 0.99999 for ViT)."""

from __future__ import annotations

import torch

from sparsa.metrics.quality import output_fidelity
from sparsa.models import from_module


def test_a_random_forward_is_compared_like_for_like():
    import transformers as tf

    torch.manual_seed(0)
    cfg = tf.ViTMAEConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64, mask_ratio=0.0)
    lm = from_module(tf.ViTMAEModel(cfg).eval())
    x = torch.randn(6, 3, 16, 16)
    state = torch.random.get_rng_state()
    got = output_fidelity(lm, lm.clone(), x, batch_size=4)
    assert got["cosine_min"] > 0.9999
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random stream is left as it was
