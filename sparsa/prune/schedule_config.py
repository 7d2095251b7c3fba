"""The tolerance schedule's configuration: the single home of its option names, defaults and range
checks. `sparsa prune --tolerance` and the recipe's `tolerance-prune` stage both build it, with these
names and defaults (tests/test_cli_recipe_names.py checks); tolerances are fractions everywhere."""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields

from sparsa.errors import SparsaError
from sparsa.prune.acceptance import ACCEPT_RULES
from sparsa.prune.plan import ALIASES, CRITERIA

# options renamed since runs were first written: old name -> current name
RENAMED = {"rounds_max": "max_rounds"}


@dataclass
class ScheduleConfig:
    tolerance: float  # allowed accuracy drop, as a fraction (0.02 = 2 points)
    # "structured" | "unstructured". CHOICE structured: it removes whole heads / neurons / channels, so
    # the model gets smaller and faster (unstructured zeros only save with sparse kernels); the seed's
    # unstructured magnitude rule is one option away (recipes/seed001_tolerance_quant.yaml sets it)
    granularity: str = "structured"
    kinds: tuple[str, ...] | None = None  # structured: unit kinds (None: heads+ffn, or channels for convs)
    scope: str = "layer"  # structured: "layer" (per-layer sensitivity) | "global"
    importance: str = "l1"  # structured: criterion (sparsa.prune.plan names; l1 = l1_group)
    delta0: float = 0.05
    delta_min: float = 0.005
    delta_max: float = 0.10
    s_max: float = 0.95
    max_rounds: int = 50  # rounds at most
    budget_s: float | None = None  # wall-clock budget; stop (keeping the last accepted state) past it
    rollback: bool = True  # False: return the first state beyond tolerance (mimics the seed's Table 1)
    trial_recovery_steps: int = 0  # KD steps after each trial, before its check
    round_recovery_epochs: float = 1.0  # fine-tuning after each round
    recovery_lr: float | None = None  # None: 1e-5 unstructured (docs/algorithms.md §3), 1e-4 structured (KD)
    recovery_batch: int = 64
    kd: str = "logits"  # "none" | "logits" | "hidden" | "logits+hidden"
    check_split: str = "calib"
    report_split: str = "test"
    seed: int = 0
    accept: str = "upper_bound"  # "upper_bound" (paired one-sided confidence bound) | "point" (the seed's rule)
    confidence: float = 0.95  # one-sided level of the upper bound (accept="upper_bound")

    def __post_init__(self):
        t = float(self.tolerance)
        if not (0.0 < t < 1.0) or math.isnan(t):
            raise SparsaError(f"tolerance={self.tolerance} is out of range (0, 1)",
                              hint="give the allowed accuracy drop as a fraction, e.g. --tolerance 0.02 for 2 points")
        self.tolerance = t
        if self.granularity not in ("structured", "unstructured"):
            raise SparsaError(f"unknown granularity {self.granularity!r}", hint="use 'structured' or 'unstructured'")
        if self.scope not in ("layer", "global"):
            raise SparsaError(f"unknown scope {self.scope!r}", hint="use 'layer' or 'global'")
        if self.accept not in ACCEPT_RULES:
            raise SparsaError(f"unknown accept rule {self.accept!r}",
                              hint="use 'upper_bound' (confidence bound of the drop) or 'point' (the seed's rule)")
        if not (0.5 <= float(self.confidence) < 1.0):
            raise SparsaError(f"confidence={self.confidence} is out of range [0.5, 1)",
                              hint="give a one-sided level such as 0.95 (0.5 makes the bound the point estimate)")
        if self.importance not in CRITERIA and self.importance not in ALIASES:
            raise SparsaError(f"unknown importance {self.importance!r}",
                              hint=f"choose from {', '.join(sorted(set(CRITERIA) | set(ALIASES)))}")
        self.importance = ALIASES.get(self.importance, self.importance)  # one name per criterion in saved runs
        if not (isinstance(self.max_rounds, int) and self.max_rounds >= 1):
            raise SparsaError(f"max_rounds={self.max_rounds} must be a whole number >= 1", hint="e.g. max_rounds=50")
        if self.recovery_lr is None:
            self.recovery_lr = 1e-5 if self.granularity == "unstructured" else 1e-4
        if self.kinds is None:
            return
        self.kinds = tuple(self.kinds)
        bad = set(self.kinds) - {"heads", "ffn", "channels"}
        if bad or not self.kinds:
            raise SparsaError(f"unknown unit kinds {sorted(bad) or '(none)'}", hint="choose from heads, ffn, channels")
    def check_steps(self):
        if not (0 < self.delta_min <= self.delta0 <= self.delta_max < 1) or not (0 < self.s_max < 1):
            raise SparsaError("schedule steps must satisfy 0 < delta_min <= delta0 <= delta_max < 1 and 0 < s_max < 1",
                              hint="e.g. delta0=0.05 delta_min=0.005 delta_max=0.1 s_max=0.95")

    @classmethod
    def from_opts(cls, tolerance: float, **opts) -> "ScheduleConfig":
        names = {f.name for f in fields(cls)}
        renamed = sorted(set(opts) & set(RENAMED))
        if renamed:
            raise SparsaError(f"tolerance_prune option {renamed[0]!r} is now called {RENAMED[renamed[0]]!r}",
                              hint=f"pass {RENAMED[renamed[0]]}=... (the name the recipe and `sparsa prune` use)")
        unknown = set(opts) - names
        if unknown:
            raise SparsaError(f"unknown tolerance_prune option(s): {sorted(unknown)}",
                              hint=f"options: {', '.join(sorted(names - {'tolerance'}))}")
        cfg = cls(tolerance=tolerance, **opts)
        cfg.check_steps()
        return cfg

    def resolve_kinds(self, lm) -> None:
        if self.kinds is None:
            has = [k for k in ("heads", "ffn", "channels") if lm.adapter.groups(k)]
            self.kinds = tuple(k for k in has if k != "channels") or tuple(has) or ("heads", "ffn")


def schedule_defaults() -> dict:
    """{option: default} of every ScheduleConfig option that has one (what the recipe and the CLI show)."""
    return {f.name: f.default for f in fields(ScheduleConfig) if f.default is not MISSING}
