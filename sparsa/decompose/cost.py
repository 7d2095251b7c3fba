"""MACs of convolution / Linear layers, counted the way PENNI counts them (docs/algorithms.md §6.5–6.6).

For a decomposed conv with output map H'·W' (input map H·W):
  penni      basis stage C_in·d·K·H'W'  +  combination nnz(C)·H'W'   (PENNI's FLOPs metric, halved)
  escalate   combination nnz(C)·H·W (ternary: additions only)  +  basis stage C_out·d·K·H'W'
  dense      C_out·C_in·K·H'W' (the layer folded back into one ordinary convolution)
Plain Conv/Linear layers count their dense MACs in every column. Other ops (BatchNorm, pooling,
attention products) are not counted here; `sparsa.metrics.count_macs` counts whole models.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sparsa.decompose.layers import PenniConv, PenniLinear

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@torch.no_grad()
def layer_macs(model: nn.Module, inputs: dict | Tensor) -> dict[str, dict]:
    """Per layer (batch 1 of `inputs`): {"penni", "escalate", "dense"} MACs and the coefficient nnz."""
    from sparsa.decompose.escalate import Int8Layer

    rows: dict[str, dict] = {}
    hooks = []

    def hook(name):
        def fn(m, args, out):
            x = args[0]
            b = x.shape[0]
            if isinstance(m, PenniConv):
                hw_out = math.prod(out.shape[2:])
                hw_in = math.prod(x.shape[2:])
                c = m.coefficients()
                nnz, d, k = int(c.ne(0).sum()), m.num_basis, m.kernel_volume
                dense = m.out_channels * m.in_channels * k * hw_out
                rows[name] = {"penni": m.in_channels * d * k * hw_out + nnz * hw_out,
                              "escalate": nnz * hw_in + m.out_channels * d * k * hw_out, "dense": dense,
                              "nnz": nnz, "coefficients": c.numel()}
            elif isinstance(m, PenniLinear):
                tokens = x.numel() // x.shape[-1] // b
                nnz = int(m.coefs.ne(0).sum())
                rows[name] = {"penni": tokens * (m.segments * m.num_basis * m.group + nnz),
                              "escalate": tokens * (nnz * m.group + m.out_features * m.num_basis * m.group),
                              "dense": tokens * m.in_features * m.out_features, "nnz": nnz, "coefficients": m.coefs.numel()}
            else:
                if isinstance(m, nn.Linear) or (isinstance(m, Int8Layer) and m.op == "linear"):
                    w = m.weight if isinstance(m, nn.Linear) else m.weight_q
                    tokens = x.numel() // x.shape[-1] // b
                    mac = tokens * w.shape[0] * w.shape[1]
                else:
                    w = m.weight if isinstance(m, _CONV) else m.weight_q
                    mac = math.prod(w.shape) * math.prod(out.shape[2:])
                rows[name] = {"penni": mac, "escalate": mac, "dense": mac}
        return fn

    for name, m in model.named_modules():
        if isinstance(m, (PenniConv, PenniLinear, nn.Linear, *_CONV)) or type(m).__name__ == "Int8Layer":
            hooks.append(m.register_forward_hook(hook(name)))
    was = model.training
    model.eval()
    try:
        if isinstance(inputs, dict):
            model(**{k: v[:1] if isinstance(v, Tensor) else v for k, v in inputs.items()})
        else:
            model(inputs[:1])
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return rows


def total_macs(model: nn.Module, inputs) -> dict:
    """Totals over all Conv/Linear layers of `layer_macs` (batch 1)."""
    rows = layer_macs(model, inputs)
    return {k: sum(r[k] for r in rows.values()) for k in ("penni", "escalate", "dense")}
