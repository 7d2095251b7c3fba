"""Attention-pruning methods by name: one place that turns `method, **opts` into a runner.

A runner is `runner(q, k, v, valid, bias, state) -> (output, HDPStats)` on `[B,H,N,D_h]` tensors.
`state` carries what must survive across layers of one forward (SpAtten's cascade).

Methods
  dense      float softmax attention, nothing pruned (reference)
  int        HDP arithmetic with nothing pruned (fixed-point cost alone)
  hdp-seed   docs/algorithms.md §5.1 exactly: Σ|A| block importance, row rule with ρ_B
  hdp        sparsa's default: the best variant the benches found (see HDP_DEFAULTS and
             HDP_FAMILY_DEFAULTS, docs/attention.md); its rule can depend on the model family
  topk       Top-K blocks per block-row (`ratio` = fraction pruned); topk-element: per query row
  energon    two-round Energon filtering (`rho_b` = round ratio)
  spatten    SpAtten cascade head pruning (`ratio` = fraction of heads pruned)
"""

from __future__ import annotations

from sparsa.attention.baselines import (
    SpAttenState,
    dense_attention,
    energon_attention,
    spatten_attention,
    topk_attention,
)
from sparsa.attention.hdp import HDPConfig, hdp_attention_int
from sparsa.errors import SparsaError

METHODS = ("hdp", "hdp-seed", "topk", "topk-element", "energon", "spatten", "dense", "int")

# the seed's exact rule (docs/algorithms.md §5.1); accuracy studies keep V in float (step 11)
SEED_DEFAULTS = dict(importance="abs", threshold="rho", rho_b=-0.5, block=2, newton_steps=0, v_mode="float")
# sparsa's `hdp`: chosen from bench/attention_quality.py (docs/attention.md, "Choice of the default")
HDP_DEFAULTS = dict(importance="rowmax", threshold="gap", gap=15.0, split="round", imp_bits=0, block=1,
                    newton_steps=1, v_mode="float")

# per-family overrides of HDP_DEFAULTS, each chosen on that family's calibration split (docs/attention.md,
# "Vision models"). ViT and Swin: the seed's ρ_B row rule on signed 1×1 scores (θ = A[i,j], so each query
# row is thresholded at mean + ρ_B·(max − mean) of its own attendable scores) with pruned="mean": the
# pruned keys keep their integer-part softmax weight, spent on the row's mean value vector instead of
# being renormalised away. The fixtures' attention is diffuse (17 / 16-token rows): at 70% sparsity the
# pruned keys still hold ~30–40% of a row's weight, and dropping it is what cost accuracy.
VISION_DEFAULTS = dict(importance="signed", threshold="rho", rho_b=0.5, pruned="mean")
HDP_FAMILY_DEFAULTS = {"vit": dict(VISION_DEFAULTS), "swin": dict(VISION_DEFAULTS)}

# which option moves each method along its sparsity axis (for calibration to a target sparsity)
KNOB = {"hdp-seed": "rho_b", "hdp": "gap", "topk": "ratio", "topk-element": "ratio", "energon": "rho_b",
        "spatten": "ratio"}
KNOB_RANGE = {"rho_b": (-1.0, 1.0), "gap": (0.0, 64.0), "ratio": (0.0, 0.99)}
# True when a larger knob value prunes more
KNOB_INCREASING = {"rho_b": True, "gap": False, "ratio": True}

_CFG_FIELDS = set(HDPConfig.__dataclass_fields__)


def hdp_defaults(family: str | None = None) -> dict:
    """`hdp`'s defaults for a model family (`LoadedModel.family`; None = the generic default)."""
    return {**HDP_DEFAULTS, **HDP_FAMILY_DEFAULTS.get(family, {})}


def knob_for(method: str, family: str | None = None, **opts) -> str | None:
    """The option that moves `method` along its sparsity axis for this family and these options."""
    if method == "hdp":
        return "rho_b" if make_config(method, family, **opts).threshold == "rho" else "gap"
    return KNOB.get(method)


def make_config(method: str, family: str | None = None, **opts) -> HDPConfig:
    """HDPConfig for `method` (and, for `hdp`, the model family) with the defaults overridden by
    `opts` (None values ignored)."""
    base = dict(SEED_DEFAULTS if method == "hdp-seed" else hdp_defaults(family) if method == "hdp" else {"v_mode": "float"})
    if method in ("energon", "topk", "topk-element", "spatten", "int"):
        base.update(newton_steps=HDP_DEFAULTS["newton_steps"])
    for k, v in opts.items():
        if v is None:
            continue
        if k in _CFG_FIELDS:
            base[k] = v
    return HDPConfig(**base)


def check_method(method: str) -> str:
    if method not in METHODS:
        raise SparsaError(f"unknown attention method {method!r}", hint=f"use one of {', '.join(METHODS)}")
    return method


def make_runner(method: str, family: str | None = None, **opts):
    """Return `runner(q, k, v, valid, bias, state)` for `method` (see module docstring); `family`
    selects `hdp`'s per-family defaults."""
    check_method(method)
    unknown = set(opts) - _CFG_FIELDS - {"ratio", "sparsity", "granularity"}
    if unknown:
        raise SparsaError(f"unknown option(s) for attention method {method!r}: {sorted(unknown)}")
    cfg = make_config(method, family, **opts)
    ratio = opts.get("ratio")
    if ratio is None:
        ratio = opts.get("sparsity")
    if method in ("topk", "topk-element", "spatten") and ratio is None:
        ratio = 0.5

    if method == "dense":
        return lambda q, k, v, valid, bias, state: dense_attention(q, k, v, valid, bias)
    if method == "int":
        cfg = cfg.with_(rho_b=-1.0, threshold="rho", tau_h=None, block=1)
        return lambda q, k, v, valid, bias, state: hdp_attention_int(q, k, v, cfg, valid, bias)
    if method in ("hdp", "hdp-seed"):
        return lambda q, k, v, valid, bias, state: hdp_attention_int(q, k, v, cfg, valid, bias)
    if method in ("topk", "topk-element"):
        gran = "element" if method == "topk-element" else "block"
        return lambda q, k, v, valid, bias, state: topk_attention(q, k, v, ratio, cfg, valid, bias, gran)
    if method == "energon":
        return lambda q, k, v, valid, bias, state: energon_attention(q, k, v, cfg.rho_b, cfg, valid, bias)
    if method == "spatten":

        def run(q, k, v, valid, bias, state):
            if "spatten" not in state:
                state["spatten"] = SpAttenState(ratio)
            return spatten_attention(q, k, v, state["spatten"], cfg, valid, bias)

        return run
    raise AssertionError(method)
