"""PENNI model shrinking (docs/algorithms.md §6.4): remove dead channels and dead basis kernels.

With the coefficients viewed as C[C_out, C_in, d]:
  input channel i is dead when C[:, i, :] = 0, output channel o when C[o, :, :] = 0, basis b when
  C[:, :, b] = 0 (plain convs/Linears: the same on their weights).
Channels are coupled across layers by `sparsa.models.graph.analyse_channels` (torch.fx): a group
is the producers' output rows, the BatchNorm entries and the consumers' input columns (a block
of h·w columns of the first Linear after a flatten) that carry the same channels; a residual add
joins two groups into one. Channel j of a group survives when it is alive as an output of some
producer AND alive as an input of some consumer (ref: intersect across a layer boundary, union
within a residual group). Removals repeat until nothing changes.

mode="safe" (default, CHOICE): an output channel whose producer weights are all zero but whose
activation is a non-zero constant (bias / BatchNorm shift) is kept while a consumer reads it, so
shrinking never changes the function. mode="ref" removes it anyway, as the reference does.
"""

from __future__ import annotations

import copy
import inspect

import torch
from torch import Tensor, nn

from sparsa.decompose.layers import PENNI_LAYERS, PenniConv, PenniLinear, merge_to_dense
from sparsa.errors import SparsaError

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def shrink(model: nn.Module, example_input: Tensor | dict, mode: str = "safe", max_rounds: int = 50) -> dict:
    """Shrink `model` in place; returns a record of what was removed."""
    if mode not in ("safe", "ref"):
        raise SparsaError(f"shrink mode {mode!r} is not known", hint="use 'safe' (function-preserving) or 'ref'")
    inputs = _as_kwargs(model, example_input)
    rec = {"mode": mode, "channels": {}, "bases": {}, "rounds": 0, "note": ""}
    before = _widths(model)
    try:
        from sparsa.models.graph import analyse_channels

        for rnd in range(max_rounds):
            groups = analyse_channels(_dense_proxy(model), inputs)
            removals = _plan(model, groups, inputs, mode)
            if not removals:
                break
            _apply(model, removals)
            rec["rounds"] = rnd + 1
    except SparsaError:
        raise
    except Exception as e:  # torch.fx cannot trace this model (e.g. a Hugging Face transformer)
        rec["note"] = f"channel dependencies not traceable ({type(e).__name__}); only dead bases removed"
    after = _widths(model)
    rec["channels"] = {k: [before[k], after.get(k, before[k])] for k in before if after.get(k, before[k]) != before[k]}
    rec["bases"] = remove_dead_bases(model)
    return rec


def remove_dead_bases(model: nn.Module) -> dict:
    """Drop basis kernels whose coefficients are all zero (keeping at least one per layer)."""
    out = {}
    with torch.no_grad():
        for name, m in model.named_modules():
            if not isinstance(m, PENNI_LAYERS):
                continue
            alive = m.coefs.flatten(0, -2).ne(0).any(0)
            if bool(alive.all()):
                continue
            keep = alive.nonzero().flatten()
            if keep.numel() == 0:
                keep = torch.zeros(1, dtype=torch.long)
            out[name] = [m.num_basis, int(keep.numel())]
            m.basis = nn.Parameter(m.basis[keep].clone())
            m.coefs = nn.Parameter(m.coefs[..., keep].clone())
            m.num_basis = int(keep.numel())
    return out


# ---------------------------------------------------------------------------------------------- planning


def _dense_proxy(model: nn.Module) -> nn.Module:
    """A copy with every decomposed layer folded to its dense form: same channel structure, and a
    module the graph analysis knows."""
    proxy = copy.deepcopy(model)
    merge_to_dense(proxy)
    return proxy.eval()


def _rows_alive(m: nn.Module) -> Tensor:
    """Per output channel: does any weight reach it?"""
    if isinstance(m, PenniConv):
        return m.coefs.ne(0).flatten(1).any(1)
    if isinstance(m, PenniLinear):
        return m.coefs.ne(0).flatten(1).any(1)
    return m.weight.ne(0).flatten(1).any(1)


def _cols_alive(m: nn.Module) -> Tensor:
    """Per input column: does any weight read it?"""
    if isinstance(m, PenniConv):
        return m.coefs.ne(0).any(2).any(0)
    if isinstance(m, PenniLinear):  # columns are segments; expand to inputs
        return m.coefs.ne(0).any(2).any(0).repeat_interleave(m.group)
    if isinstance(m, _CONV):
        if m.groups != 1:
            return torch.ones(m.in_channels, dtype=torch.bool)
        return m.weight.ne(0).transpose(0, 1).flatten(1).any(1)
    return m.weight.ne(0).any(0)


@torch.no_grad()
def _plan(model: nn.Module, groups, inputs: dict, mode: str) -> dict[str, dict[str, set]]:
    """{module path: {"out": original row indices to drop, "in": original column indices to drop}}."""
    mods = dict(model.named_modules())
    act = _consumer_activity(model, groups, inputs) if mode == "safe" else {}
    removals: dict[str, dict[str, set]] = {}
    for gi, g in enumerate(groups):
        if any(isinstance(mods[c.path], PenniLinear) for c in g.consumers):
            continue  # a decomposed Linear's segments would need re-cutting: keep its inputs whole
        n = g.size
        alive_out = torch.zeros(n, dtype=torch.bool)
        for p in g.producers:
            alive_out |= _rows_alive(mods[p])
        alive_in = torch.zeros(n, dtype=torch.bool)
        for c in g.consumers:
            cols = _cols_alive(mods[c.path])
            idx = c.offset + torch.arange(n).unsqueeze(1) * c.stride + torch.arange(c.stride)
            alive_in |= cols[idx].any(1)
        keep = alive_in & (alive_out | act.get(gi, torch.zeros(n, dtype=torch.bool)))
        if not g.consumers:  # nobody reads it (should not happen: outputs are blocked) - leave alone
            continue
        if not bool(keep.any()):
            keep[0] = True  # a group never vanishes entirely (zero-width layers are not modules)
        drop = (~keep).nonzero().flatten().tolist()
        if not drop:
            continue
        for p in g.producers:
            removals.setdefault(p, {"out": set(), "in": set()})["out"].update(drop)
        for pc in g.per_channel:
            removals.setdefault(pc.path, {"out": set(), "in": set()})["out"].update(pc.offset + j for j in drop)
        for c in g.consumers:
            cols = {c.offset + j * c.stride + s for j in drop for s in range(c.stride)}
            removals.setdefault(c.path, {"out": set(), "in": set()})["in"].update(cols)
    return removals


@torch.no_grad()
def _consumer_activity(model: nn.Module, groups, inputs: dict) -> dict[int, Tensor]:
    """Per group and channel: is the activation any consumer reads non-zero on the example input?
    (A channel with all-zero producer weights is input-independent, so one input decides.)"""
    want = {c.path for g in groups for c in g.consumers}
    seen: dict[str, Tensor] = {}
    hooks = []
    for name, m in model.named_modules():
        if name in want:
            hooks.append(m.register_forward_pre_hook(lambda mod, a, name=name: seen.__setitem__(name, a[0].detach())))
    was = model.training
    model.eval()
    try:
        model(**inputs)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    out = {}
    for gi, g in enumerate(groups):
        nz = torch.zeros(g.size, dtype=torch.bool)
        for c in g.consumers:
            x = seen.get(c.path)
            if x is None:
                nz[:] = True
                continue
            if isinstance(model.get_submodule(c.path), (nn.Linear, PenniLinear)):
                cols = x.reshape(-1, x.shape[-1]).ne(0).any(0)
            else:
                cols = x.transpose(0, 1).reshape(x.shape[1], -1).ne(0).any(1)
            idx = c.offset + torch.arange(g.size).unsqueeze(1) * c.stride + torch.arange(c.stride)
            nz |= cols[idx].any(1)
        out[gi] = nz
    return out


# ---------------------------------------------------------------------------------------------- surgery


@torch.no_grad()
def _apply(model: nn.Module, removals: dict[str, dict[str, set]]) -> None:
    from sparsa.models.resize import set_submodule, sliced

    for path, rm in removals.items():
        m = model.get_submodule(path)
        n_out, n_in = _io_sizes(m)
        out_idx = _keep(n_out, rm["out"]) if rm["out"] else None
        in_idx = _keep(n_in, rm["in"]) if rm["in"] else None
        if isinstance(m, PenniConv):
            c = m.coefs
            if out_idx is not None:
                c = c.index_select(0, out_idx)
                if m.bias is not None:
                    m.bias = nn.Parameter(m.bias.index_select(0, out_idx).clone())
                m.out_channels = int(out_idx.numel())
            if in_idx is not None:
                c = c.index_select(1, in_idx)
                m.in_channels = int(in_idx.numel())
            m.coefs = nn.Parameter(c.clone())
        elif isinstance(m, PenniLinear):
            if in_idx is not None:
                raise SparsaError(f"cannot remove inputs of the decomposed Linear {path!r}")
            if out_idx is not None:
                m.coefs = nn.Parameter(m.coefs.index_select(0, out_idx).clone())
                if m.bias is not None:
                    m.bias = nn.Parameter(m.bias.index_select(0, out_idx).clone())
                m.out_features = int(out_idx.numel())
        elif isinstance(m, _BN):
            set_submodule(model, path, sliced(m, out_idx=out_idx))
        elif isinstance(m, (_CONV, nn.Linear)):
            if isinstance(m, _CONV) and m.groups != 1:
                set_submodule(model, path, sliced(m, out_idx=out_idx if out_idx is not None else in_idx))
            else:
                set_submodule(model, path, sliced(m, out_idx=out_idx, in_idx=in_idx))
        else:
            raise SparsaError(f"cannot shrink a {type(m).__name__} at {path!r}")


def _io_sizes(m: nn.Module) -> tuple[int, int]:
    if isinstance(m, PenniConv):
        return m.out_channels, m.in_channels
    if isinstance(m, PenniLinear):
        return m.out_features, m.in_features
    if isinstance(m, _BN):
        return m.num_features, m.num_features
    if isinstance(m, _CONV):
        return m.out_channels, m.in_channels
    return m.out_features, m.in_features


def _keep(n: int, drop: set) -> Tensor:
    return torch.tensor([i for i in range(n) if i not in drop], dtype=torch.long)


def _widths(model: nn.Module) -> dict[str, list[int]]:
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, (*PENNI_LAYERS, *_CONV, nn.Linear)):
            o, i = _io_sizes(m)
            out[name] = [i, o]
    return out


def _as_kwargs(model: nn.Module, example_input) -> dict:
    if isinstance(example_input, dict):
        return example_input
    if isinstance(example_input, Tensor):
        params = [p for p in inspect.signature(model.forward).parameters.values() if p.name != "self"]
        return {(params[0].name if params else "x"): example_input}
    raise SparsaError("shrink needs an example input (a tensor or a dict of model keyword arguments)",
                      hint="pass loaded.example_inputs(batch=2)")
