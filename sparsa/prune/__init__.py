"""Structured pruning that physically shrinks models (see docs/pruning.md).

    from sparsa.models import load
    from sparsa.prune import prune, PrunePlan
    small = prune(load("minilm"), PrunePlan(heads=0.5, ffn=0.5, importance="activation"))
    small.save("out/minilm-50")

Pieces: `compute_importance(lm, criterion, data)` -> scores per group, `select_units(scores, plan)`
-> kept indices, `apply_keep(lm, keep)` (in place surgery), `prune(lm, plan)` (all three, on a copy,
with a record). `sparsa.prune.schedule` (tolerance-driven, iterative) builds on these.
"""

from sparsa.prune.importance import compute_importance
from sparsa.prune.plan import CRITERIA, KINDS, PrunePlan, n_keep
from sparsa.prune.structured import apply_keep, prune, select_units

__all__ = ["PrunePlan", "CRITERIA", "KINDS", "n_keep", "compute_importance", "select_units", "apply_keep", "prune"]
