"""Which quantized layers cost the most quality: leave one layer's activations in float at a time
and measure the recovery on calibration data (never on the evaluation set).

Used to pick the few layers that mixed precision keeps in float (`QuantConfig.overrides`), and
(`trim_smoothing`) the SmoothQuant sites whose run-time Mul is worth its cost.
"""

from __future__ import annotations

import fnmatch

import torch

from sparsa.errors import SparsaError
from sparsa.quant.api import quant_layers
from sparsa.quant.config import QuantConfig


@torch.no_grad()
def layer_sensitivity(quantized, reference, texts: list[str], candidates: list[str] | None = None) -> list[dict]:
    """Embedding-cosine gain of keeping each candidate layer's input in float (text models).

    quantized: a LoadedModel after `quantize_` with activations "dynamic" or "static";
    reference: the float LoadedModel; texts: calibration sentences.
    Returns [{"layer", "gain"}] sorted by gain, largest first.
    """
    from sparsa.metrics import fidelity

    qls = quant_layers(quantized)
    candidates = candidates or list(qls)
    unknown = [c for c in candidates if c not in qls]
    if unknown:
        raise SparsaError(f"not quantized layers: {unknown[:3]}", hint=f"choose among {list(qls)[:4]} ...")
    tok = quantized.tokenizer
    if tok is None:
        raise SparsaError("layer_sensitivity measures embedding fidelity and needs a text model")
    # batch 1: dynamic activation ranges are per call, so padded batches would mix sentences
    base = fidelity(quantized, reference, texts, tok, batch_size=1)["cosine_mean"]
    out = []
    for name in candidates:
        q = qls[name]
        mode = q.activations
        q.activations = "none"  # weight stays integer; only the activation rounding is removed
        try:
            c = fidelity(quantized, reference, texts, tok, batch_size=1)["cosine_mean"]
        finally:
            q.activations = mode
        out.append({"layer": name, "gain": c - base})
    return sorted(out, key=lambda d: -d["gain"])


def _smoothing_sites(quantized) -> dict[str, list[str]]:
    """Run-time smoothing Muls of a quantized model: {site: [layers reading the smoothed input]}.
    Layers that read one tensor with one shared scale (BERT's Q, K, V) form one site; smoothing folded
    into another layer (attention-out into V) costs nothing at run time and is not a site."""
    sites: dict[str, list[str]] = {}
    for name, q in quant_layers(quantized).items():
        if q.smooth_inv is None:
            continue
        prefix, _, leaf = name.rpartition(".")
        shared = prefix.endswith("attention.self") and leaf in ("query", "key", "value")
        sites.setdefault(f"{prefix}.qkv" if shared else name, []).append(name)
    return sites


def _without_smoothing(config, layers: list[str]):
    """`config` with smoothing off for `layers` (exact-name overrides first, keeping each layer's other fields)."""
    d = config.to_dict()
    first = {}
    for n in layers:  # the first matching pattern wins, so carry over what the one that matched set
        matched = next((ov for pat, ov in config.overrides.items() if fnmatch.fnmatchcase(n, pat)), None)
        first[n] = dict(matched or {}) | {"smooth": None}
    d["overrides"] = first | {k: v for k, v in config.overrides.items() if k not in first}
    return QuantConfig.from_dict(d)


def trim_smoothing(reference, config, calib_texts: list[str], score_texts: list[str], budget: float = 0.001,
                   progress=None) -> tuple:
    """Keep SmoothQuant's run-time Muls only where they pay (text models).

    Each Mul (one per smoothed input that is not folded away) costs a pass over the activations
    at run time. Every site is dropped once to measure what it buys (embedding cosine on
    `score_texts`, statistics from `calib_texts`, both calibration data), then sites are dropped
    cheapest first while the cosine stays within `budget` of the fully smoothed model.
    Returns (config with the dropped sites' smoothing off, report dict)."""
    from sparsa.metrics import fidelity
    from sparsa.quant.api import quantize_

    if reference.tokenizer is None:
        raise SparsaError("trim_smoothing measures embedding fidelity and needs a text model")
    if not 0.0 <= budget < 1.0:
        raise SparsaError(f"budget={budget} must be a cosine drop in [0, 1)", hint="e.g. 0.001")

    def score(cfg):
        q = quantize_(reference.clone(), cfg, calib=calib_texts, calib_samples=len(calib_texts))
        return fidelity(q, reference, score_texts, reference.tokenizer, batch_size=1)["cosine_mean"], q

    base, q = score(config)
    sites = _smoothing_sites(q)
    if not sites:
        raise SparsaError("the config smooths no layer at run time: nothing to trim", hint="set QuantConfig.smooth")
    gain = {}
    for s, layers in sites.items():
        gain[s] = base - score(_without_smoothing(config, layers))[0]
        if progress:
            progress(f"smoothing at {s}: buys {gain[s]:+.5f} cosine")
    dropped: list[str] = []
    cur, current = base, config
    for s in sorted(sites, key=lambda k: gain[k]):
        trial = _without_smoothing(config, [n for d in dropped + [s] for n in sites[d]])
        c = score(trial)[0]
        if c >= base - budget:
            dropped.append(s)
            cur, current = c, trial
    report = {"sites": len(sites), "kept": [s for s in sites if s not in dropped], "dropped": dropped,
              "gain": gain, "cosine_full": base, "cosine_trimmed": cur, "budget": budget}
    return current, report


def trim_summary(report: dict) -> dict:
    """The part of a `trim_smoothing` report that records keep (without the per-site gains)."""
    return {k: report[k] for k in ("kept", "dropped", "cosine_full", "cosine_trimmed", "budget")}


def check_trimmable(reference, config) -> None:
    """What trimming the smoothing needs: a smoothed config, and a text model (it scores embedding
    fidelity). Cheap: callers check before loading calibration data."""
    if config.smooth is None:
        raise SparsaError("a smoothing budget trims the smoothing of a smoothed model",
                          hint="set the smoothing strength too (smooth=, CLI --smooth)")
    if getattr(reference, "modality", None) != "text":
        raise SparsaError("a smoothing budget scores embedding fidelity on calibration sentences, so it works on "
                          "text models", hint="drop the budget (CLI --smooth-budget), or keep layers float instead")


def trim_smoothing_on(reference, config, texts: list[str], n_stats: int, budget: float, progress=None) -> tuple:
    """`trim_smoothing` on one list of calibration sentences: statistics from the first `n_stats`,
    the cosine scored on the next 64 (as `sparsa quantize --smooth-budget` and the recipe stage do)."""
    check_trimmable(reference, config)
    if not isinstance(texts, list) or len(texts) < n_stats + 8:
        raise SparsaError(f"trimming the smoothing needs at least {n_stats + 8} calibration sentences "
                          f"({n_stats} for statistics, the rest to score)", hint="give more calibration text")
    return trim_smoothing(reference, config, texts[:n_stats], texts[n_stats:n_stats + 64], budget=budget,
                          progress=progress)
