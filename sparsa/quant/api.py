"""The public verb: `quantize_(model, config)` replaces Linear layers by `QuantLinear` in place.

```python
from sparsa.quant import QuantConfig, quantize_, quant_size
quantize_(loaded, QuantConfig(bits=8, scheme="sym", clip="search"))            # weights only
quantize_(loaded, QuantConfig(activations="static"), calib="corpus")           # + static activations
quantize_(loaded, QuantConfig(overrides={"encoder.layer.0.output.dense": None}))  # keep one layer float
```
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from sparsa.errors import SparsaError
from sparsa.quant.config import QuantConfig
from sparsa.quant.modules import QuantLinear
from sparsa.quant.primitives import choose_qparams
from sparsa.quant.smooth import plan_bert_smoothing, smooth_scale


def _is_linear(module: nn.Module, name: str) -> bool:
    return isinstance(module, nn.Linear)


def quantize_(model, config: QuantConfig | None = None, *, calib=None, filter_fn: Callable | None = None,
              calib_samples: int = 32, seq_len: int | None = None):
    """Quantize `model` (nn.Module or LoadedModel) in place; returns the same object.

    calib: calibration data, needed for static activations and the output-error search: a
    dataset name (`"corpus"`, `"digits"`, a path), a sparsa Dataset, a list of texts, or a list of
    input dicts for `model(**batch)`. filter_fn(module, name) picks layers (default: every nn.Linear).
    """
    config = config or QuantConfig()
    if not isinstance(config, QuantConfig):
        raise SparsaError(f"config must be a QuantConfig, got {type(config).__name__}")
    loaded = model if hasattr(model, "adapter") else None
    module = loaded.model if loaded is not None else model
    filter_fn = filter_fn or _is_linear
    targets = {}
    for name, m in module.named_modules():
        if isinstance(m, nn.Linear) and filter_fn(m, name):
            spec = config.for_layer(name)
            if spec is not None:
                targets[name] = spec
    if not targets:
        raise SparsaError("no layer to quantize: the filter / overrides select no nn.Linear",
                          hint="check filter_fn and the override patterns (fnmatch on module names)")

    stats = {}
    need = [n for n, s in targets.items() if s.activations == "static" or s.smooth is not None
            or (s.clip == "search" and s.objective == "output")]
    if need:
        if loaded is not None:
            from sparsa.quant.calibrate import calib_batches

            batches = calib_batches(loaded, calib, n=calib_samples, seq_len=seq_len)
        elif isinstance(calib, list) and calib and isinstance(calib[0], dict):
            batches = calib
        else:
            raise SparsaError(
                "this config needs calibration data (static activations or objective='output') but none was given",
                hint="pass calib= a list of input dicts (or a dataset name when quantizing a LoadedModel)",
            )
        from sparsa.quant.calibrate import collect

        stats = collect(module, need, batches)

    scales, folded = {}, []
    if config.smooth_fold and any(s.smooth is not None for s in targets.values()):
        scales, folded = plan_bert_smoothing(module, targets, stats)
        if folded:  # the folded layers' inputs changed: calibrate again on the transformed float model
            stats = collect(module, need, batches)
    else:
        scales = {n: smooth_scale(stats[n].absmax, module.get_submodule(n).weight.detach().float(), s.smooth)
                  for n, s in targets.items() if s.smooth is not None}

    for name, spec in targets.items():
        lin = module.get_submodule(name)
        st = stats.get(name)
        act_qp = None
        smooth = scales.get(name)
        rows = st.input_rows() if st is not None else None
        if smooth is not None:
            rows = rows / smooth
        if spec.activations == "static":
            # with smoothing the statistics are taken on the smoothed rows (x / s)
            values = st.sample() if smooth is None else torch.cat([rows.reshape(-1), rows.amin().view(1), rows.amax().view(1)])
            act_qp = choose_qparams(values, spec.act_bits, spec.a_scheme, spec.a_clip, None, percentile=spec.percentile)
        inputs = rows if spec.objective == "output" else None
        q = QuantLinear.from_float(lin, spec, inputs=inputs, act_qp=act_qp, smooth_scale=smooth)
        _set_submodule(module, name, q)

    record = {"stage": "quantize", "config": config.to_dict(), "layers": len(targets), **quant_size(module)}
    setattr(module, "_sparsa_quant_config", config.to_dict())
    if loaded is not None:
        loaded.record.setdefault("stages", []).append(record)
    return model


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def _module(model) -> torch.nn.Module:
    # a LoadedModel or an nn.Module; a module is never unwrapped (DINOv3ViTModel has a child named `model`)
    return model if isinstance(model, torch.nn.Module) else getattr(model, "model", model)


def quant_layers(model) -> dict[str, QuantLinear]:
    module = _module(model)
    return {n: m for n, m in module.named_modules() if isinstance(m, QuantLinear)}


def float_storage(model) -> str:
    """"float32", or "float16" after `half_float_storage_` (what stays float is stored in 2 bytes)."""
    return getattr(_module(model), "_sparsa_float_storage", "float32")


@torch.no_grad()
def half_float_storage_(model):
    """Store everything that stays float (biases, norms, embeddings, position tables, scales,
    smoothing factors) as float16. The tensors are rounded to float16 in place, so the model computes
    exactly what `save_quantized` writes and `quant_size` counts (2 bytes per value). Returns `model`."""
    module = _module(model)
    if not quant_layers(module):
        raise SparsaError("float16 storage is for quantized models", hint="run sparsa.quant.quantize_ first")
    floats = [(n, t) for n, t in module.state_dict(keep_vars=True).items() if t.is_floating_point()]
    big = [n for n, t in floats if t.numel() and float(t.abs().max()) > 65504.0]
    if big:
        raise SparsaError(f"{big[:3]} hold values beyond float16's range (65504)", hint="keep float32 storage")
    for _, t in floats:
        t.copy_(t.half().float())
    module._sparsa_float_storage = "float16"
    stages = getattr(model, "record", {}).get("stages", [])
    if stages and stages[-1].get("stage") == "quantize":  # the quantize record reports the stored sizes
        stages[-1].update(quant_size(module), float_storage="float16")
    return model


def quant_size(model) -> dict:
    """Real storage bytes: packed integer weights + scales + zero points + everything left in float
    (4 bytes a value, 2 after `half_float_storage_`).

    `fp32_bytes` is what the same model takes with every tensor in float32, `ratio` = bytes / fp32_bytes.
    Shared (tied) tensors are counted once; non-persistent buffers (e.g. Swin's relative position
    index, rebuilt from the config) are not stored, so they are not counted.
    """
    module = _module(model)
    qls = quant_layers(module)
    fsize = 2 if float_storage(module) == "float16" else 4
    parts = {"weight": 0, "scale": 0, "zero_point": 0, "bias": 0, "smooth": 0}
    fp32 = 0
    for m in qls.values():
        for k, v in m.storage_bytes(float_size=fsize).items():
            parts[k] += v
        fp32 += 4 * m.in_features * m.out_features + (4 * m.out_features if m.bias is not None else 0)
    qprefixes = tuple(n + "." for n in qls)
    float_bytes, seen = 0, set()
    for name, t in module.state_dict(keep_vars=True).items():
        if name.startswith(qprefixes) or id(t) in seen:
            continue
        seen.add(id(t))
        float_bytes += t.numel() * (fsize if t.is_floating_point() else t.element_size())
        fp32 += t.numel() * 4 if t.is_floating_point() else t.numel() * t.element_size()
    total = sum(parts.values()) + float_bytes
    return {
        "bytes": int(total),
        "fp32_bytes": int(fp32),
        "ratio": total / fp32 if fp32 else 1.0,
        "int_weight_bytes": parts["weight"],
        "scale_bytes": parts["scale"],
        "zero_point_bytes": parts["zero_point"],
        "float_bytes": int(float_bytes + parts["bias"] + parts["smooth"]),
        "quantized_layers": len(qls),
    }


@torch.no_grad()
def dequantize_model_(model, smooth_mul: bool = True) -> nn.Module:
    """Replace every QuantLinear by a float nn.Linear holding its dequantized weight (for float export).

    smooth_mul=False drops smoothed layers' input Mul (export puts it back in front of the integer
    op after ONNX Runtime's fusions, which a Mul between LayerNorm and Q/K/V would block)."""
    module = _module(model)
    for name, q in quant_layers(module).items():
        lin = nn.Linear(q.in_features, q.out_features, bias=q.bias is not None)
        lin.weight.copy_(q.dequantized_weight())
        if q.bias is not None:
            lin.bias.copy_(q.bias)
        smoothed = q.smooth_inv is not None and smooth_mul
        _set_submodule(module, name, _SmoothedLinear(q.smooth_inv.clone(), lin) if smoothed else lin)
    return model


class _SmoothedLinear(nn.Module):
    """x * smooth_inv, then the Linear: what a smoothed QuantLinear computes, in float (for export)."""

    def __init__(self, smooth_inv: torch.Tensor, linear: nn.Linear):
        super().__init__()
        self.register_buffer("smooth_inv", smooth_inv)
        self.linear = linear

    def forward(self, x):
        return self.linear(x * self.smooth_inv.to(x.dtype))
