"""Structured variant of PENNI's sparsity step (`penalty="group"`, a CHOICE; docs/penni.md).

The seed's L1 penalty on the coefficients makes them unstructured-sparse: on a CPU nothing gets
faster unless whole channels die, and behind a BatchNorm the L1 penalty shrinks every row alike.
Here the penalty is a group lasso (L2,1) on the coefficient slices of each output channel
C[o, :, :] and each input channel C[:, i, :] (and on the rows/columns of 1×1 convolutions), plus
L1 on the BatchNorm scales γ (network slimming). After retraining, `prune_channels` scores every
channel of every channel group (`sparsa.models.graph.analyse_channels`: producers, BatchNorms,
consumers coupled across residual adds and concatenations) and zeroes the consumer columns of
the weak ones. Those channels are then unread, so `shrink` removes them without changing the
function, and the shrunk layers fold back into narrower dense convolutions (`merge_to_dense`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sparsa.decompose.layers import PenniConv, PenniLinear
from sparsa.errors import SparsaError

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _is_1x1(m: nn.Module) -> bool:
    return isinstance(m, (nn.Conv2d, nn.Conv3d)) and m.groups == 1 and math.prod(m.kernel_size) == 1


def group_penalty(model: nn.Module) -> Tensor:
    """Σ_layers (Σ_o ‖C[o,:,:]‖₂ + Σ_i ‖C[:,i,:]‖₂) over decomposed convs and 1×1 convs, + Σ_BN |γ|."""
    terms = []
    for m in model.modules():
        if isinstance(m, PenniConv):
            c = m.coefs
        elif _is_1x1(m):
            c = m.weight.flatten(2)
        elif isinstance(m, _BN) and m.affine:
            terms.append(m.weight.abs().sum())
            continue
        else:
            continue
        terms.append(c.flatten(1).norm(dim=1).sum() + c.transpose(0, 1).flatten(1).norm(dim=1).sum())
    if not terms:
        raise SparsaError("the model has no decomposed layers, 1×1 convolutions or BatchNorms to regularise",
                          hint="run decompose() first")
    return sum(terms)


def _weight_param(m: nn.Module) -> tuple[str, Tensor]:
    if isinstance(m, (PenniConv, PenniLinear)):
        return "coefs", m.coefs
    return "weight", m.weight


def _column_norms(m: nn.Module, n: int, offset: int, stride: int) -> Tensor:
    """‖columns of channel j‖₂ for the n channels a consumer reads at `offset` (stride columns each)."""
    _, w = _weight_param(m)
    w = w.detach()
    cols = w.transpose(0, 1).flatten(1)  # [inputs, everything else]: PenniConv coefs, conv and Linear weights
    idx = offset + torch.arange(n).unsqueeze(1) * stride + torch.arange(stride)
    return cols[idx.flatten()].reshape(n, -1).norm(dim=1)


@torch.no_grad()
def channel_scores(model: nn.Module, example_input) -> list[tuple[object, Tensor]]:
    """Per prunable channel group: (group, score per channel), mean-normalised to 1.

    score_j = (Σ_consumers ‖columns_j‖ / mean) · (Σ_BN |γ_j| / mean, where the group has BatchNorms)."""
    from sparsa.decompose.shrink import _as_kwargs, _dense_proxy
    from sparsa.models.graph import analyse_channels

    mods = dict(model.named_modules())
    groups = analyse_channels(_dense_proxy(model), _as_kwargs(model, example_input))
    out = []
    for g in groups:
        if not g.consumers or any(isinstance(mods[c.path], PenniLinear) or getattr(mods[c.path], "groups", 1) != 1
                                  for c in g.consumers):
            continue  # nobody reads it / a decomposed Linear's segments or a grouped conv's inputs stay whole
        read = torch.zeros(g.size)
        for c in g.consumers:
            cn = _column_norms(mods[c.path], g.size, c.offset, c.stride)
            read += cn / cn.mean().clamp_min(1e-12)
        score = read
        gam = [mods[pc.path].weight.detach().abs()[pc.offset:pc.offset + g.size] for pc in g.per_channel
               if isinstance(mods[pc.path], _BN) and mods[pc.path].affine]
        if gam:
            gs = sum(gam)
            score = score * gs / gs.mean().clamp_min(1e-12)
        out.append((g, score / score.mean().clamp_min(1e-12)))
    return out


@torch.no_grad()
def prune_channels(model: nn.Module, example_input, s: float = 0.5, fraction: float | None = None) -> dict:
    """Zero every consumer column of each channel whose score is below s × its group's mean score, or,
    with `fraction`, of the lowest-scoring floor(fraction × size) channels of every group (at least
    one channel per group survives). Returns {"masks": {param name: keep mask},
    "removed": {group name: [dropped, size]}}; the masks hold the columns at zero during finetune()."""
    if not s >= 0 or not math.isfinite(s):
        raise SparsaError(f"channel threshold s={s} must be a non-negative number", hint="e.g. 0.5")
    if fraction is not None and not 0 <= fraction < 1:
        raise SparsaError(f"channel fraction {fraction} must lie in [0, 1)", hint="e.g. 0.5: half of every group's channels")
    mods = dict(model.named_modules())
    masks: dict[str, Tensor] = {}
    removed = {}
    for g, score in channel_scores(model, example_input):
        if fraction is None:
            drop = score < s
        else:
            drop = torch.zeros(g.size, dtype=torch.bool)
            drop[score.argsort()[:int(fraction * g.size)]] = True
        if bool(drop.all()):
            drop[score.argmax()] = False
        if not bool(drop.any()):
            continue
        removed[g.name] = [int(drop.sum()), g.size]
        for c in g.consumers:
            m = mods[c.path]
            leaf, w = _weight_param(m)
            name = f"{c.path}.{leaf}" if c.path else leaf
            keep = masks.setdefault(name, torch.ones_like(w, dtype=torch.bool))
            cols = (c.offset + torch.nonzero(drop).flatten().unsqueeze(1) * c.stride + torch.arange(c.stride)).flatten()
            keep[:, cols] = False  # PenniConv coefs [C_out, C_in, d]; conv / Linear weights: axis 1
            w.mul_(keep)
    return {"masks": masks, "removed": removed}


def merge_masks(*mask_sets: dict[str, Tensor]) -> dict[str, Tensor]:
    """AND of several {param name: keep mask} dicts."""
    out: dict[str, Tensor] = {}
    for ms in mask_sets:
        for k, v in ms.items():
            out[k] = out[k] & v if k in out else v.clone()
    return out
