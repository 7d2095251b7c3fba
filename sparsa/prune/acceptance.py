"""When a tolerance-pruning step is accepted: the paired accuracy-drop statistics and the rule applied
to them, plus what every trial is measured and logged with (check accuracy, params, MACs).

"Within tolerance" (`accept`):
  "upper_bound"   (default) the one-sided `confidence` upper bound of the accuracy drop must be
                  ≤ tolerance. The drop is paired: dense and pruned model on the same check images,
                  drop = (b - c)/n with b = images only the dense model gets right, c = images only
                  the pruned one gets right; its standard error comes from the discordant pairs,
                  SE = sqrt((b + c - n·drop²) / (n - 1)) / sqrt(n), bound = drop + z·SE.
  "point"         the seed's rule: the measured drop itself must be ≤ tolerance.
CHOICE: upper_bound at 95%. Reason: a run makes hundreds of accept/reject decisions on the same
small check split, so the point rule keeps the states that happened to score well on it; on
tiny-swin/digits (180 check images) its test-split loss overshot every tolerance by 1.3–2.8 points.
With the bound and logit-KD recovery the test loss stayed within 5 / 2 / 1% (BENCHMARKS.md).
"""

from __future__ import annotations

import math

import torch

from sparsa.errors import SparsaError

ACCEPT_RULES = ("upper_bound", "point")


def accuracy_drop(dense_correct: torch.Tensor, correct: torch.Tensor, tolerance: float, *,
                  accept: str = "upper_bound", confidence: float = 0.95) -> dict:
    """Is the accuracy drop of a pruned model within `tolerance`? Paired comparison on the same
    images: `dense_correct` / `correct` are bool vectors (top-1 right per image).

    Returns {"drop", "se", "upper", "b", "c", "n", "ok"}: drop = (b - c)/n (b: only the dense
    model right, c: only the pruned one right), se from the discordant pairs, upper = drop +
    z(confidence)·se; ok compares `upper` ("upper_bound") or `drop` ("point") with the tolerance."""
    from statistics import NormalDist

    if accept not in ACCEPT_RULES:
        raise SparsaError(f"unknown accept rule {accept!r}", hint="use 'upper_bound' or 'point'")
    dense_correct, correct = dense_correct.bool().flatten(), correct.bool().flatten()
    if dense_correct.shape != correct.shape or dense_correct.numel() == 0:
        raise SparsaError(f"paired accuracy needs the same non-empty images for both models "
                          f"({dense_correct.numel()} vs {correct.numel()})", hint="score both on one check split")
    n = correct.numel()
    b = int((dense_correct & ~correct).sum())
    c = int((~dense_correct & correct).sum())
    drop = (b - c) / n
    var = max(0.0, (b + c - n * drop * drop) / (n - 1)) if n > 1 else 0.0
    se = math.sqrt(var / n)
    upper = drop + NormalDist().inv_cdf(confidence) * se
    value = upper if accept == "upper_bound" else drop
    return {"drop": drop, "se": se, "upper": upper, "b": b, "c": c, "n": n, "ok": value <= tolerance + 1e-12}


class Meter:
    def __init__(self, dense, check, report, unstructured_slots):
        from sparsa.metrics import count_macs, count_params

        self.check, self.report = check, report
        self.inputs = dense.example_inputs(batch=1)
        self.params0 = count_params(dense.model)
        self.macs0 = count_macs(dense.model, self.inputs)
        self.slot_macs = _linear_macs(dense.model, self.inputs, unstructured_slots) if unstructured_slots else {}

    def acc(self, lm, which="check") -> float:
        from sparsa.metrics import accuracy

        return accuracy(lm, self.check if which == "check" else self.report)

    def correct(self, lm) -> torch.Tensor:
        """Per check image: is the model's top-1 right?"""
        from sparsa.metrics.quality import predict_logits

        with torch.no_grad():
            return predict_logits(lm, self.check.x).argmax(-1) == self.check.y

    def judge(self, dense_correct, lm, cfg) -> tuple[float, dict]:
        """(check accuracy, accuracy_drop verdict) of `lm` against the dense model."""
        corr = self.correct(lm)
        v = accuracy_drop(dense_correct, corr, cfg.tolerance, accept=cfg.accept, confidence=cfg.confidence)
        return float(corr.float().mean()), v

    def size(self, lm, masks) -> dict:
        from sparsa.metrics import count_macs, count_params

        params = count_params(lm.model)
        macs = count_macs(lm.model, self.inputs) if not masks else self.macs0
        zeros = 0
        if masks:
            for slot, m in masks.items():
                z = int((m == 0).sum())
                zeros += z
                macs -= self.slot_macs.get(slot, 0) * z / m.numel()
        nonzero = params - zeros
        return {"params": params, "nonzero_params": nonzero, "macs": int(macs),
                "compression": 1.0 - nonzero / self.params0}


def _linear_macs(model, inputs, slots) -> dict[str, int]:
    """MACs of each Linear (by weight path) at the example input (tokens x in x out)."""
    out, hooks = {}, []
    for slot in slots:
        mod = model.get_submodule(slot.rsplit(".", 1)[0])

        def hook(m, args, res, slot=slot):
            out[slot] = res.numel() // res.shape[-1] * m.in_features * m.out_features

        hooks.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for h in hooks:
            h.remove()
    return out
