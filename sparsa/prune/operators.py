"""The step operators of the tolerance schedule: each knows its "slots" and applies one trial
(a higher sparsity for one slot) to a model (granularity):
  "unstructured"  the seed's rule: magnitude masks on every attention/MLP Linear weight, one slot
                  per Linear (the defaults of docs/algorithms.md §3: δ0 0.05, fine-tune 1 epoch at lr 1e-5, masks fixed)
  "structured"    removes whole units with sparsa.prune (heads / FFN neurons / conv channels):
                  scope "layer" = one slot per group (per-layer sensitivity), "global" = one slot
                  per unit kind ranked across layers.
"""

from __future__ import annotations

import torch

from sparsa.errors import SparsaError
from sparsa.prune.schedule_config import ScheduleConfig


class UnstructuredOperator:
    """Magnitude masks on attention/MLP Linear weights; a slot = one Linear."""

    def __init__(self, lm):
        paths = []
        for g in lm.adapter.head_groups():
            paths += [p for p in dict.fromkeys((g.q, g.k, g.v, g.o)) if p not in paths]  # a fused qkv once
        for g in lm.adapter.ffn_groups():
            paths += [g.fc1, g.fc2] + ([g.gate] if g.gate else [])
        if not paths:
            raise SparsaError(f"this {lm.family} model has no attention/MLP Linear layers to prune",
                              hint="use granularity='structured' with kinds=('channels',) for conv models")
        self.slots = [f"{p}.weight" for p in paths]

    def masks_from(self, lm) -> dict[str, torch.Tensor]:
        return {s: (lm.model.get_parameter(s) != 0).float() for s in self.slots}

    @staticmethod
    def mask_for(w: torch.Tensor, sparsity: float) -> torch.Tensor:
        """Prune the round(s*n) smallest |w| (ties: lower flat index first)."""
        n = w.numel()
        k = int(round(sparsity * n))
        mask = torch.ones(n)
        if k > 0:
            order = torch.sort(w.detach().abs().flatten(), stable=True).indices[:k]
            mask[order] = 0.0
        return mask.view_as(w)

    def trial(self, lm, masks, slot, s_new):
        """Apply in place; return an undo closure."""
        p = lm.model.get_parameter(slot)
        old_w, old_m = p.detach().clone(), masks[slot]
        masks[slot] = self.mask_for(p, s_new)
        with torch.no_grad():
            p.mul_(masks[slot])

        def undo():
            with torch.no_grad():
                p.copy_(old_w)
            masks[slot] = old_m

        return lm, undo


class StructuredOperator:
    """Whole units through sparsa.prune; a slot = one group (scope layer) or one kind (global)."""

    def __init__(self, lm, cfg: ScheduleConfig, importance_data):
        self.cfg = cfg
        self.data = importance_data
        self.orig = {k: {g.name: g.size for g in lm.adapter.groups(k)} for k in cfg.kinds}
        missing = [k for k in cfg.kinds if not self.orig[k]]
        if missing:
            raise SparsaError(f"this {lm.family} model has no prunable {missing[0]}",
                              hint=f"choose kinds among those it has: "
                                   f"{[k for k in ('heads', 'ffn', 'channels') if lm.adapter.groups(k)]}")
        if cfg.scope == "global":
            self.slots = list(cfg.kinds)
        else:
            self.slots = [f"{k}:{name}" for k in cfg.kinds for name in self.orig[k]]

    def trial(self, lm, masks, slot, s_new):
        from sparsa.prune import PrunePlan, n_keep, prune

        cur = {k: {g.name: g.size for g in lm.adapter.groups(k)} for k in self.cfg.kinds}
        if self.cfg.scope == "global":
            kind = slot
            total_orig, total_cur = sum(self.orig[kind].values()), sum(cur[kind].values())
            target = max(len(cur[kind]), n_keep(total_orig, s_new))
            rel = 1.0 - target / total_cur
            plan = PrunePlan(**{kind: max(0.0, min(rel, 0.999))}, importance=self.cfg.importance, scope="global",
                             seed=self.cfg.seed)
        else:
            kind, name = slot.split(":", 1)
            target = n_keep(self.orig[kind][name], s_new)
            from sparsa.prune import compute_importance

            g = next(g for g in lm.adapter.groups(kind) if g.name == name)
            scores = compute_importance(lm, self.cfg.importance, data=self.data, groups={kind: [g]},
                                        seed=self.cfg.seed)[kind][name]
            order = torch.sort(-scores.float(), stable=True).indices[: max(1, target)]
            plan = PrunePlan(keep={kind: {name: sorted(order.tolist())}}, importance=self.cfg.importance)
        return prune(lm, plan, data=self.data), None
