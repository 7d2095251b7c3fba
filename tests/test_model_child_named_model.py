"""An HF model with a child module called `model` (DINOv3ViTModel.model is its encoder).

Before: sparsa's helpers accepted "a LoadedModel or an nn.Module" through getattr(x, "model", x), so
such a module was unwrapped to its encoder: count_macs called the encoder with pixel_values (exit 3
in info, prune, eval), and params / quantized layers were counted on the child."""

from __future__ import annotations

import torch

from sparsa.metrics import count_macs, count_params
from sparsa.models import from_module
from sparsa.quant import QuantConfig, quantize_
from sparsa.quant.api import quant_layers


class _Outer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(4, 8)
        self.model = torch.nn.Linear(8, 8)  # named like a LoadedModel's attribute

    def forward(self, x):
        return self.model(self.embed(x))


def test_a_module_is_never_unwrapped_to_its_child_named_model():
    m = _Outer()
    assert count_params(m) == 4 * 8 + 8 + 8 * 8 + 8
    assert count_macs(m, {"x": torch.randn(1, 4)}) == 4 * 8 + 8 * 8


def test_dinov3_info_counts_and_quantizes_the_whole_model():
    import transformers as tf

    torch.manual_seed(0)
    cfg = tf.DINOv3ViTConfig(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=64, num_register_tokens=1)
    lm = from_module(tf.DINOv3ViTModel(cfg).eval())
    x = lm.example_inputs(batch=1)
    assert count_macs(lm.model, x) == count_macs(lm, x) > 0
    quantize_(lm, QuantConfig(bits=8))
    assert len(quant_layers(lm.model)) == len(quant_layers(lm)) == 6  # q, k, v, o, fc1, fc2
