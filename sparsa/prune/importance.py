"""Importance of every prunable unit: one score tensor per group (higher = more important).

Criteria (docs/algorithms.md §2.4):
  l1_group          sum of |w| over every weight slice removed with the unit (default)
  l1_mean_producer  mean |w| of the producer rows only (seed 000 exactly)
  l2                Euclidean norm over the same slices as l1_group
  taylor            |sum of w * dL/dw| over the unit's slices, summed over calibration batches;
                    L = cross-entropy for labelled classifiers, else the mean squared output
                    (a distillation-free proxy for embedding models)
  activation        the unit's contribution to its layer's output on calibration data:
                    head h -> mean over tokens of ||ctx_h W_O[:, R_h]^T||, FFN neuron j ->
                    mean |a_j| * ||W_2[:, j]||, channel j -> mean ||x_j|| * ||W_C[:, j]|| per consumer
  random            uniform scores from the plan's seed (a control)
"""

from __future__ import annotations

import torch
from torch import nn

from sparsa.models.units import ChannelGroup, FFNGroup, HeadGroup
from sparsa.prune.calib import calib_batches


def _rows(w: torch.Tensor, size: int) -> torch.Tensor:
    """[size, ...] view grouping axis 0 into `size` units."""
    return w.reshape(size, -1)


def _head_rows(w: torch.Tensor, heads: int) -> torch.Tensor:  # rows R_h of Q/K/V
    return w.reshape(heads, -1)


def _head_cols(w: torch.Tensor, heads: int) -> torch.Tensor:  # columns R_h of O
    return w.reshape(w.shape[0], heads, -1).transpose(0, 1).reshape(heads, -1)


def _cols(w: torch.Tensor, offset: int, stride: int, size: int) -> torch.Tensor:
    """Input columns of a consumer for `size` channels starting at `offset`, `stride` columns each."""
    cols = w[:, offset : offset + size * stride]
    cols = cols.reshape(w.shape[0], size, stride, *w.shape[2:]) if w.dim() > 2 else cols.reshape(w.shape[0], size, stride)
    return cols.transpose(0, 1).reshape(size, -1)


def unit_slices(model: nn.Module, g, *, producer_only: bool = False, grads: bool = False) -> list[torch.Tensor]:
    """The weight (or gradient) slices of each unit of group `g`, each shaped [units, -1]."""
    get = (lambda p: p.grad if p.grad is not None else torch.zeros_like(p)) if grads else (lambda p: p.detach())
    m = model.get_submodule
    if isinstance(g, HeadGroup):
        if g.fused:  # rows [3, heads, head_dim]: unit h owns its rows in each of the three blocks
            w = get(m(g.q).weight)
            out = [w.reshape(3, g.num_heads, -1).transpose(0, 1).reshape(g.num_heads, -1)]
        else:
            out = [_head_rows(get(m(p).weight), g.num_heads) for p in (g.q, g.k, g.v)]
        if not producer_only:
            out.append(_head_cols(get(m(g.o).weight), g.num_heads))
        return out
    if isinstance(g, FFNGroup):
        w1 = get(m(g.fc1).weight)  # [halves * size, in]: neuron j owns row j of each block
        out = [w1.reshape(g.halves, g.size, -1).transpose(0, 1).reshape(g.size, -1)]
        if g.gate:
            out.append(_rows(get(m(g.gate).weight), g.size))
        if not producer_only:
            w2 = get(m(g.fc2).weight)
            out.append(w2.t().reshape(g.size, -1))
        return out
    assert isinstance(g, ChannelGroup)
    out = [_rows(get(m(p).weight), g.size) for p in g.producers]
    if not producer_only:
        for c in g.consumers:
            mod = m(c.path)
            if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and mod.groups != 1:
                continue
            out.append(_cols(get(mod.weight), c.offset, c.stride, g.size))
    return out


def _magnitude(model, g, criterion: str) -> torch.Tensor:
    if criterion == "l1_mean_producer":
        s = unit_slices(model, g, producer_only=True)
        return torch.cat(s, dim=1).abs().mean(1)
    s = unit_slices(model, g)
    if criterion == "l2":
        return torch.sqrt(sum(x.pow(2).sum(1) for x in s))
    return sum(x.abs().sum(1) for x in s)


def compute_importance(lm, criterion: str = "l1_group", data=None, groups: dict | None = None, seed: int = 0,
                       n_samples: int = 64) -> dict[str, dict[str, torch.Tensor]]:
    """{kind: {group name: scores[units]}} for the kinds in `groups` (default: all three)."""
    from sparsa.prune.plan import ALIASES

    criterion = ALIASES.get(criterion, criterion)
    if groups is None:
        groups = {k: lm.adapter.groups(k) for k in ("heads", "ffn", "channels")}
    model = lm.model
    if criterion in ("l1_group", "l1_mean_producer", "l2"):
        with torch.no_grad():
            return {k: {g.name: _magnitude(model, g, criterion) for g in gs} for k, gs in groups.items()}
    if criterion == "random":
        gen = torch.Generator().manual_seed(seed)
        return {k: {g.name: torch.rand(g.size, generator=gen) for g in gs} for k, gs in groups.items()}
    if criterion == "taylor":
        return _taylor(lm, groups, data, n_samples)
    if criterion == "activation":
        return _activation(lm, groups, data, n_samples)
    raise ValueError(criterion)


def _output_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    for key in ("logits", "last_hidden_state"):
        if getattr(out, key, None) is not None:
            return getattr(out, key)
    return out[0]


def _taylor(lm, groups, data, n_samples):
    model = lm.model
    params = list(model.parameters())
    req = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
        p.grad = None
    acc = {k: {g.name: torch.zeros(g.size) for g in gs} for k, gs in groups.items()}
    try:
        for inputs, labels, _ in calib_batches(lm, data, n=n_samples):
            model.zero_grad(set_to_none=True)
            out = _output_tensor(model(**inputs))
            if labels is not None and out.dim() == 2:
                loss = nn.functional.cross_entropy(out, labels)
            else:
                loss = out.pow(2).mean()
            loss.backward()
            with torch.no_grad():
                for k, gs in groups.items():
                    for g in gs:
                        w = unit_slices(model, g)
                        gr = unit_slices(model, g, grads=True)
                        acc[k][g.name] += sum((a * b).sum(1) for a, b in zip(w, gr)).abs()
    finally:
        model.zero_grad(set_to_none=True)
        for p, r in zip(params, req):
            p.requires_grad_(r)
    return acc


def _activation(lm, groups, data, n_samples):
    """Mean contribution of each unit to its layer's output, measured with forward pre-hooks."""
    model = lm.model
    acc = {k: {g.name: torch.zeros(g.size, dtype=torch.float64) for g in gs} for k, gs in groups.items()}
    count = {"n": 0}
    state = {"mask": None}
    hooks = []

    def token_mean(v: torch.Tensor) -> torch.Tensor:
        """v: [B, N, units] (or [B, units]) -> sum over real tokens of the per-sample token mean."""
        mask = state["mask"]
        if v.dim() == 3 and mask is not None and mask.shape == v.shape[:2]:
            m = mask.to(v.dtype).unsqueeze(-1)
            return ((v * m).sum(1) / m.sum(1).clamp(min=1)).sum(0)
        return v.reshape(v.shape[0], -1, v.shape[-1]).mean(1).sum(0)

    for g in groups.get("heads", []):
        o = model.get_submodule(g.o)

        def hook(mod, args, g=g):
            ctx = args[0].detach()  # [..., H*Dh]
            w = mod.weight.detach()  # [D, H*Dh]
            lead = ctx.shape[:-1]
            c = ctx.reshape(*lead, g.num_heads, g.head_dim)
            wh = w.reshape(w.shape[0], g.num_heads, g.head_dim)
            contrib = torch.einsum("...hd,ohd->...ho", c, wh).norm(dim=-1)  # [..., H]
            acc["heads"][g.name] += token_mean(contrib).double()

        hooks.append(o.register_forward_pre_hook(hook))
    for g in groups.get("ffn", []):
        fc2 = model.get_submodule(g.fc2)

        def hook(mod, args, g=g):
            a = args[0].detach().abs()
            col = mod.weight.detach().norm(dim=0)  # ||W2[:, j]||
            acc["ffn"][g.name] += token_mean(a * col).double()

        hooks.append(fc2.register_forward_pre_hook(hook))
    for g in groups.get("channels", []):
        for c in g.consumers:
            mod = model.get_submodule(c.path)
            if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and mod.groups != 1:
                continue

            def hook(mod, args, g=g, c=c):
                x = args[0].detach()
                if isinstance(mod, nn.Linear):
                    xs = x[..., c.offset : c.offset + g.size * c.stride]
                    xs = xs.reshape(-1, g.size, c.stride).norm(dim=-1)  # [tokens, units]
                    wn = _cols(mod.weight.detach(), c.offset, c.stride, g.size).norm(dim=1)
                    acc["channels"][g.name] += (xs.mean(0) * wn * x.shape[0]).double()
                else:
                    xs = x[:, c.offset : c.offset + g.size].flatten(2).pow(2).mean(-1).sqrt()  # RMS [B, units]
                    wn = mod.weight.detach()[:, c.offset : c.offset + g.size].transpose(0, 1).reshape(g.size, -1).norm(dim=1)
                    acc["channels"][g.name] += (xs.sum(0) * wn).double()

            hooks.append(mod.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            for inputs, _, mask in calib_batches(lm, data, n=n_samples):
                state["mask"] = mask
                model(**inputs)
                count["n"] += next(iter(inputs.values())).shape[0]
    finally:
        for h in hooks:
            h.remove()
    n = max(count["n"], 1)
    return {k: {name: (v / n).float() for name, v in d.items()} for k, d in acc.items()}
