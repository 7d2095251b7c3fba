"""Static costs: parameters, multiply-accumulates (counted from the ops actually run), bytes."""

from __future__ import annotations

import torch
from torch import nn


def _model(m):
    # a LoadedModel or an nn.Module; a module is never unwrapped (DINOv3ViTModel has a child named `model`)
    return m if isinstance(m, torch.nn.Module) else getattr(m, "model", m)


def count_params(model, exclude_embeddings: bool = False) -> int:
    """Number of parameters (shared tensors once); optionally without nn.Embedding tables."""
    m = _model(model)
    skip = set()
    if exclude_embeddings:
        skip = {id(p) for mod in m.modules() if isinstance(mod, nn.Embedding) for p in mod.parameters()}
    seen, total = set(), 0
    for p in m.parameters():
        if id(p) in seen or id(p) in skip:
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def model_bytes(model) -> int:
    """Bytes of parameters and buffers as stored (dtype-aware; shared tensors once)."""
    m = _model(model)
    seen, total = set(), 0
    for t in list(m.parameters()) + list(m.buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
    return total


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def flop_mapping() -> dict:
    """The ops sparsa counts on top of torch's flop table (the simulator's tracer uses the same)."""
    mapping = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        mapping[op] = _sdpa_cpu_flops
    return mapping


def count_macs(model, inputs: dict) -> int:
    """MACs of one forward pass on `inputs` (FLOPs / 2, as torch's flop counter counts 2 per MAC).

    Counts every matmul-like op, including the attention Q·Kᵀ and A·V products inside
    scaled_dot_product_attention (the CPU kernel is not in torch's table; added here).
    """
    from torch.utils.flop_counter import FlopCounterMode

    m = _model(model)
    with FlopCounterMode(display=False, custom_mapping=flop_mapping()) as fc, torch.no_grad():
        m(**inputs)
    return int(fc.get_total_flops() // 2)
