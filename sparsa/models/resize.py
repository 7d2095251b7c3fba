"""Build smaller copies of Linear / Conv / BatchNorm modules, and put modules back into a model.

One place constructs resized modules, for both the pruning surgery (which copies the kept
weights with `index_select` on sorted indices) and the loader (which rebuilds a pruned model
at its recorded shapes before loading its weights).
"""

from __future__ import annotations

import torch
from torch import nn

from sparsa.models.layer_kinds import build_layer, is_layer_kind

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_RESIZABLE = {c.__name__ for c in (nn.Linear, *_CONV, *_BN)}


def is_technique_layer(kind: str) -> bool:
    """A layer a technique built (rebuilt whole from the registry), not a torch layer resized in place."""
    return is_layer_kind(kind) or kind not in _RESIZABLE


def set_submodule(model: nn.Module, path: str, new: nn.Module) -> None:
    """Replace the module at dotted `path` (setattr on a dotted name does not; seed 000's error)."""
    parent_path, _, leaf = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, leaf, new)


def module_shape(m: nn.Module) -> dict | None:
    """The constructor sizes of a resizable module, as plain JSON."""
    if callable(getattr(m, "sparsa_shape", None)):  # sparsa's own layers (e.g. PENNI's decomposed convs)
        return m.sparsa_shape()
    if isinstance(m, nn.Linear):
        return {"type": "Linear", "in_features": m.in_features, "out_features": m.out_features}
    if isinstance(m, _CONV):
        return {"type": type(m).__name__, "in_channels": m.in_channels, "out_channels": m.out_channels, "groups": m.groups}
    if isinstance(m, _BN):
        return {"type": type(m).__name__, "num_features": m.num_features}
    return None


def resized(m: nn.Module, shape: dict) -> nn.Module:
    """A fresh module like `m` (same hyper-parameters, dtype, device) at the sizes in `shape`."""
    p = next(m.parameters(), None)
    kw = {"dtype": p.dtype, "device": p.device} if p is not None else {}
    if isinstance(m, nn.Linear):
        new = nn.Linear(shape["in_features"], shape["out_features"], bias=m.bias is not None, **kw)
    elif isinstance(m, _CONV):
        new = type(m)(
            shape["in_channels"], shape["out_channels"], m.kernel_size, stride=m.stride, padding=m.padding,
            dilation=m.dilation, groups=shape.get("groups", m.groups), bias=m.bias is not None,
            padding_mode=m.padding_mode, **kw,
        )
    elif isinstance(m, _BN):
        new = type(m)(
            shape["num_features"], eps=m.eps, momentum=m.momentum, affine=m.affine,
            track_running_stats=m.track_running_stats, **kw,
        )
    else:
        raise TypeError(f"cannot resize a {type(m).__name__}")
    new.train(m.training)
    return new


def _pick(t: torch.Tensor, axis: int, idx: torch.Tensor | None) -> torch.Tensor:
    return t if idx is None else t.index_select(axis, idx.to(t.device))


@torch.no_grad()
def sliced(m: nn.Module, out_idx: torch.Tensor | None = None, in_idx: torch.Tensor | None = None) -> nn.Module:
    """A smaller copy of `m` keeping output rows `out_idx` and input columns `in_idx` (sorted)."""
    if isinstance(m, nn.Linear):
        w = _pick(_pick(m.weight, 0, out_idx), 1, in_idx)
        new = resized(m, {"in_features": w.shape[1], "out_features": w.shape[0]})
    elif isinstance(m, _CONV):
        if m.groups != 1:
            # depthwise: one filter per channel, both sides index the same channels
            assert m.groups == m.in_channels == m.out_channels, "only plain and depthwise convs are sliced"
            idx = out_idx if out_idx is not None else in_idx
            w = _pick(m.weight, 0, idx)
            new = resized(m, {"in_channels": w.shape[0], "out_channels": w.shape[0], "groups": w.shape[0]})
            out_idx = idx
        else:
            w = _pick(_pick(m.weight, 0, out_idx), 1, in_idx)
            new = resized(m, {"in_channels": w.shape[1], "out_channels": w.shape[0], "groups": 1})
    elif isinstance(m, _BN):
        n = m.num_features if out_idx is None else len(out_idx)
        new = resized(m, {"num_features": n})
        if m.affine:
            new.weight.copy_(_pick(m.weight, 0, out_idx))
            new.bias.copy_(_pick(m.bias, 0, out_idx))
        if m.track_running_stats:
            new.running_mean.copy_(_pick(m.running_mean, 0, out_idx))
            new.running_var.copy_(_pick(m.running_var, 0, out_idx))
            new.num_batches_tracked.copy_(m.num_batches_tracked)
        return new
    else:
        raise TypeError(f"cannot slice a {type(m).__name__}")
    new.weight.copy_(w)
    if m.bias is not None:
        new.bias.copy_(_pick(m.bias, 0, out_idx))
    return new


def apply_shapes(model: nn.Module, shapes: dict[str, dict], attrs: dict[str, dict], params: dict[str, list]) -> None:
    """Rebuild a model at recorded shapes (loader side): modules, attributes, raw parameters."""
    for path, shape in shapes.items():
        old = model.get_submodule(path)
        if is_layer_kind(shape["type"]) or shape["type"] not in _RESIZABLE:  # a technique's own layer
            set_submodule(model, path, build_layer(path, shape))
            continue
        if (module_shape(old) or {}).get("type", type(old).__name__) != shape["type"]:
            raise ValueError(f"{path}: recorded {shape['type']}, model has {type(old).__name__}")
        set_submodule(model, path, resized(old, shape))
    for path, values in attrs.items():
        mod = model.get_submodule(path) if path else model
        for k, v in values.items():
            setattr(mod, k, v)
    for path, shape in params.items():
        mod_path, _, name = path.rpartition(".")
        mod = model.get_submodule(mod_path) if mod_path else model
        old = getattr(mod, name)
        setattr(mod, name, nn.Parameter(old.new_empty(shape), requires_grad=old.requires_grad))
