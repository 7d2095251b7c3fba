"""Structured pruning that removes units: smaller Linear/Conv/BatchNorm modules, updated attributes.

docs/algorithms.md §2.3: pruning producer unit j removes its rows, every consumer's input columns,
and every per-channel entry in between; indices are sorted so channel order is kept, and
modules are replaced by dotted path after the walk (not while iterating named_modules).
"""

from __future__ import annotations

from collections import defaultdict

import torch

from sparsa.errors import SparsaError
from sparsa.models.resize import set_submodule, sliced
from sparsa.models.units import ChannelGroup, FFNGroup, HeadGroup
from sparsa.prune.plan import KINDS, PrunePlan, n_keep


def _groups(lm) -> dict[str, list]:
    return {k: lm.adapter.groups(k) for k in KINDS}


def select_units(scores: dict[str, dict[str, torch.Tensor]], plan: PrunePlan) -> dict[str, dict[str, list[int]]]:
    """Kept unit indices (sorted) per group from importance scores and the plan's fractions."""
    keep: dict[str, dict[str, list[int]]] = {}
    for kind, per_group in scores.items():
        r = plan.fraction(kind)
        if plan.scope == "global" and r > 0 and per_group:
            keep[kind] = _select_global(per_group, r)
            continue
        keep[kind] = {}
        for name, s in per_group.items():
            k = n_keep(len(s), r)
            # stable descending order: ties keep the lower index
            order = torch.sort(-s.float(), stable=True).indices[:k]
            keep[kind][name] = sorted(order.tolist())
    return keep


def _select_global(per_group: dict[str, torch.Tensor], r: float) -> dict[str, list[int]]:
    names = list(per_group)
    normed = [per_group[n].float() / per_group[n].float().mean().clamp(min=1e-12) for n in names]
    total = sum(len(s) for s in normed)
    n_remove = total - n_keep(total, r)
    flat = torch.cat(normed)
    owner = torch.cat([torch.full((len(s),), i) for i, s in enumerate(normed)])
    index = torch.cat([torch.arange(len(s)) for s in normed])
    left = [len(s) for s in normed]
    removed = [set() for _ in names]
    for i in torch.sort(flat, stable=True).indices.tolist():
        if n_remove == 0:
            break
        o = int(owner[i])
        if left[o] > 1:  # every layer keeps at least one unit
            removed[o].add(int(index[i]))
            left[o] -= 1
            n_remove -= 1
    return {n: [j for j in range(len(normed[i])) if j not in removed[i]] for i, n in enumerate(names)}


def _check_keep(kind: str, g, kept: list[int]) -> list[int]:
    kept = sorted(set(int(i) for i in kept))
    if not kept:
        what = {"heads": "head", "ffn": "FFN neuron", "channels": "channel"}[kind]
        raise SparsaError(f"the plan removes every {what} of {g.name}",
                          hint=f"keep at least one {what} per layer (use a fraction below 1)")
    if kept[0] < 0 or kept[-1] >= g.size:
        raise SparsaError(f"{g.name}: kept index out of range 0..{g.size - 1}: {kept}")
    return kept


def apply_keep(lm, keep: dict[str, dict[str, list[int]]]) -> dict:
    """Shrink `lm.model` in place to the kept units. Returns {kind: {group: kept}} as applied."""
    model = lm.model
    groups = _groups(lm)
    removed: dict[tuple[str, int], set[int]] = defaultdict(set)  # (module path, axis) -> indices
    param_removed: dict[tuple[str, int], set[int]] = defaultdict(set)
    attr_updates: dict[str, dict[str, int]] = {}
    applied: dict[str, dict[str, list[int]]] = {}
    for kind in KINDS:
        want = keep.get(kind) or {}
        unknown = set(want) - {g.name for g in groups[kind]}
        if unknown:
            raise SparsaError(f"no {kind} group named {sorted(unknown)[0]!r} in this model",
                              hint=f"groups: {', '.join(g.name for g in groups[kind][:8])}")
        for g in groups[kind]:
            if g.name not in want:
                continue
            kept = _check_keep(kind, g, want[g.name])
            applied.setdefault(kind, {})[g.name] = kept
            drop = sorted(set(range(g.size)) - set(kept))
            if not drop:
                continue
            if isinstance(g, HeadGroup):
                for p in {g.q, g.k, g.v}:
                    removed[(p, 0)] |= g.qkv_rows(drop)
                removed[(g.o, 1)] |= {h * g.head_dim + d for h in drop for d in range(g.head_dim)}
                for p, axis in g.per_head:
                    param_removed[(p, axis)] |= set(drop)
                n = len(kept)
                attr_updates[g.name] = {a: (n if v == "heads" else n * g.head_dim) for a, v in g.attrs.items()}
            elif isinstance(g, FFNGroup):
                removed[(g.fc1, 0)] |= g.fc1_rows(drop)
                removed[(g.fc2, 1)] |= set(drop)
                if g.gate:
                    removed[(g.gate, 0)] |= set(drop)
                for p in g.per_channel:
                    removed[(p, 0)] |= set(drop)
            else:
                assert isinstance(g, ChannelGroup)
                for p in g.producers:
                    removed[(p, 0)] |= set(drop)
                for c in g.per_channel:
                    removed[(c.path, 0)] |= {c.offset + j for j in drop}
                for c in g.consumers:
                    mod = model.get_submodule(c.path)
                    if getattr(mod, "groups", 1) != 1:  # depthwise reader: its filters go with the channel
                        removed[(c.path, 0)] |= {c.offset + j for j in drop}
                    else:
                        removed[(c.path, 1)] |= {c.offset + j * c.stride + s for j in drop for s in range(c.stride)}
    _surgery(model, removed)
    for (path, axis), drop in param_removed.items():
        mod_path, _, name = path.rpartition(".")
        mod = model.get_submodule(mod_path)
        p = getattr(mod, name)
        idx = torch.tensor(sorted(set(range(p.shape[axis])) - drop), dtype=torch.long)
        setattr(mod, name, torch.nn.Parameter(p.detach().index_select(axis, idx).clone(), requires_grad=p.requires_grad))
    for path, attrs in attr_updates.items():
        mod = model.get_submodule(path)
        for a, v in attrs.items():
            setattr(mod, a, v)
    lm.adapter.after_surgery()
    return applied


def _surgery(model, removed: dict[tuple[str, int], set[int]]) -> None:
    paths = sorted({p for p, _ in removed})
    for path in paths:
        mod = model.get_submodule(path)
        w = mod.weight if hasattr(mod, "weight") and mod.weight is not None else None
        sizes = (w.shape[0], w.shape[1]) if w is not None and w.dim() >= 2 else (mod.num_features, None)

        def keep_idx(axis):
            drop = removed.get((path, axis))
            if not drop:
                return None
            return torch.tensor(sorted(set(range(sizes[axis])) - drop), dtype=torch.long)

        out_idx = keep_idx(0)
        in_idx = keep_idx(1) if sizes[1] is not None else None
        set_submodule(model, path, sliced(mod, out_idx, in_idx))


def _update_config(lm) -> None:
    cfg = lm.config
    heads = [g.num_heads for g in lm.adapter.head_groups()]
    ffn = [g.size for g in lm.adapter.ffn_groups()]
    if hasattr(cfg, "model_type"):
        cfg.sparsa_heads_per_layer = heads
        cfg.sparsa_ffn_per_layer = ffn
    elif isinstance(cfg, dict):
        cfg["sparsa_heads_per_layer"] = heads
        cfg["sparsa_ffn_per_layer"] = ffn


def prune(lm, plan: PrunePlan | None = None, data=None, scores: dict | None = None, **plan_kw):
    """Return a pruned copy of `lm` (the input is not changed).

    `plan` (or PrunePlan keyword arguments) gives fractions and the criterion; `data` is the
    calibration set for `taylor`/`activation` (default: the built-in calibration split of the
    model's modality); `scores` overrides the criterion with precomputed importance.
    """
    from sparsa.metrics import count_params
    from sparsa.prune.importance import compute_importance

    plan = plan or PrunePlan(**plan_kw)
    out = lm.clone()
    groups = _groups(out)
    explicit = plan.keep or {}
    todo = {k: gs for k, gs in groups.items() if k not in explicit and plan.fraction(k) > 0 and gs}
    asked = [k for k in KINDS if plan.fraction(k) > 0 and not groups[k] and k not in explicit]
    if asked:
        # the adapter's reason where it has one (discovery: a fused qkv, several FFNs in a layer)
        reasons = {"heads": "fixed_heads", "ffn": "missing_ffn"}.get(asked[0])
        fixed = getattr(lm.adapter, reasons, dict)() if reasons else {}
        why = f" ({next(iter(fixed.values()))})" if fixed else ""
        raise SparsaError(f"this {lm.family} model has no prunable {asked[0]}{why}",
                          hint={"heads": "use --heads 0", "ffn": "use --ffn 0", "channels": "use --channels 0"}[asked[0]])
    keep = {k: dict(v) for k, v in explicit.items()}
    if todo:
        if scores is None:
            scores = compute_importance(out, plan.importance, data=data, groups=todo, seed=plan.seed)
        keep.update(select_units({k: scores[k] for k in todo}, plan))
    before = {"params": count_params(out.model), **out.adapter.describe()}
    applied = apply_keep(out, keep)
    _update_config(out)
    after = {"params": count_params(out.model), **out.adapter.describe()}
    out.record.setdefault("stages", []).append(
        {"stage": "prune", "plan": plan.to_dict(), "kept": applied, "before": before, "after": after}
    )
    return out
