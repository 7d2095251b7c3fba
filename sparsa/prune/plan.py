"""What to prune: fractions per unit kind, the importance criterion, the ranking scope."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from sparsa.errors import SparsaError, check_fraction

CRITERIA = ("l1_group", "l1_mean_producer", "l2", "taylor", "activation", "random")
ALIASES = {"l1": "l1_group", "magnitude": "l1_group", "seed": "l1_mean_producer"}
KINDS = ("heads", "ffn", "channels")


@dataclass
class PrunePlan:
    """Fractions are of each layer's units (scope "layer", the seed's uniform ratio), or of all
    units of a kind ranked together after normalising each layer by its mean score ("global").

    `keep` names the kept units explicitly instead: {"heads": {group name: [indices]}, ...};
    kinds it leaves out follow the fractions.
    """

    heads: float = 0.0
    ffn: float = 0.0
    channels: float = 0.0
    importance: str = "l1_group"
    scope: str = "layer"
    seed: int = 0
    keep: dict[str, dict[str, list[int]]] | None = field(default=None)

    def __post_init__(self):
        for k in KINDS:
            setattr(self, k, check_fraction(f"--{k}" if k != "ffn" else "--ffn", getattr(self, k)))
        self.importance = ALIASES.get(self.importance, self.importance)
        if self.importance not in CRITERIA:
            raise SparsaError(f"unknown importance criterion {self.importance!r}",
                              hint=f"choose one of: l1, {', '.join(CRITERIA)}")
        if self.scope not in ("layer", "global"):
            raise SparsaError(f"unknown scope {self.scope!r}", hint="choose 'layer' (uniform ratio) or 'global'")
        if self.keep is not None:
            bad = set(self.keep) - set(KINDS)
            if bad:
                raise SparsaError(f"unknown unit kind(s) in keep: {sorted(bad)}", hint=f"kinds: {', '.join(KINDS)}")

    def fraction(self, kind: str) -> float:
        return getattr(self, kind)

    def to_dict(self) -> dict:
        return asdict(self)


def n_keep(n: int, r: float) -> int:
    """Units a layer of n keeps at ratio r: max(1, floor((1 - r) n)) (docs/algorithms.md §2.3 rule 7)."""
    return max(1, math.floor((1.0 - r) * n + 1e-9))
