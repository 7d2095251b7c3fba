"""The reference a pruned model must match (docs/algorithms.md §2.3 rule 8).

`zeroed_consumers(lm, keep)` runs the *unpruned* model with the consumers' inputs at the
removed indices forced to 0 (hooks; weights untouched). The pruned model must give the same
outputs up to float rounding. Forcing the producer's weights to zero would not be equivalent
when a bias or a BatchNorm shift follows.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager

import torch

from sparsa.models.units import ChannelGroup, FFNGroup, HeadGroup
from sparsa.prune.plan import KINDS


def removed_inputs(lm, keep: dict[str, dict[str, list[int]]]) -> dict[str, set[int]]:
    """{consumer module path: input columns (last axis for Linear, axis 1 for conv) to zero}."""
    cols: dict[str, set[int]] = defaultdict(set)
    for kind in KINDS:
        for g in lm.adapter.groups(kind):
            if g.name not in (keep.get(kind) or {}):
                continue
            drop = sorted(set(range(g.size)) - set(keep[kind][g.name]))
            if isinstance(g, HeadGroup):
                cols[g.o] |= {h * g.head_dim + d for h in drop for d in range(g.head_dim)}
            elif isinstance(g, FFNGroup):
                cols[g.fc2] |= set(drop)
            elif isinstance(g, ChannelGroup):
                for c in g.consumers:
                    cols[c.path] |= {c.offset + j * c.stride + s for j in drop for s in range(c.stride)}
    return cols


@contextmanager
def zeroed_consumers(lm, keep: dict[str, dict[str, list[int]]]):
    """Within the block, `lm.model` behaves as if the removed units fed zeros to their consumers."""
    hooks = []
    for path, idx in removed_inputs(lm, keep).items():
        mod = lm.model.get_submodule(path)
        index = torch.tensor(sorted(idx), dtype=torch.long)
        axis = -1 if isinstance(mod, torch.nn.Linear) else 1

        def hook(m, args, index=index, axis=axis):
            x = args[0].clone()
            x.index_fill_(axis % x.dim(), index, 0.0)
            return (x, *args[1:])

        hooks.append(mod.register_forward_pre_hook(hook))
    try:
        yield lm.model
    finally:
        for h in hooks:
            h.remove()
