"""The one-shot prune verb that `sparsa prune` and the recipe's prune stage both call.

Importance on at most `calib_samples` calibration samples, the structured surgery, then (when
`refit_samples` > 0) the least-squares refit of the output projections against the dense model:
one function, so the CLI and a recipe with the same settings give the same model.
"""

from __future__ import annotations

import time

from sparsa.prune.plan import PrunePlan
from sparsa.prune.structured import prune

CALIB_SAMPLES = 64  # (= the CLI flag and recipe field default, tests/test_cli_recipe_names.py) samples the data-driven importances (activation, taylor) are measured on
REFIT_SEQ_LEN = 64  # sentences are short, and XᵀX per projection costs tokens × width²


def needs_calibration(plan: PrunePlan) -> bool:
    return plan.importance in ("taylor", "activation")


def prune_oneshot(dense, plan: PrunePlan, calib=None, *, calib_samples: int = CALIB_SAMPLES,
                  refit_samples: int = 0, refit_data=None, progress=None):
    """Returns (pruned LoadedModel, refit summary or None). `calib`: a Dataset for the data-driven
    importances; `refit_data`: the refit's calibration data (default: all of `calib`, else the modality's).
    The refit uses at most `refit_samples` samples, fewer where they would cost more than
    `refit_budget.REFIT_BUDGET_MACS` on this model (the summary's "samples" and "budget" say how many).
    `progress(message)`: told how the refit goes, layer by layer."""
    full = calib
    if calib is not None and len(calib) > calib_samples:
        calib = calib.subset(calib_samples)
    small = prune(dense, plan, data=calib if needs_calibration(plan) else None)
    if not refit_samples:
        return small, None
    from sparsa.prune import recover
    from sparsa.prune.refit_budget import REFIT_BUDGET_MACS

    t0, w0 = time.process_time(), time.perf_counter()
    report = recover.lstsq_refit(small, dense, refit_data if refit_data is not None else full,
                                 n_samples=refit_samples, seq_len=REFIT_SEQ_LEN, budget_macs=REFIT_BUDGET_MACS,
                                 progress=progress)
    errs = report["layers"]
    return small, {"samples": report["n_samples"], "samples_requested": refit_samples, "budget": report["budget"],
                   "cpu_s": round(time.process_time() - t0, 1), "wall_s": round(time.perf_counter() - w0, 1),
                   "rel_err_before": sum(e["rel_err_before"] for e in errs) / len(errs),
                   "rel_err_after": sum(e["rel_err_after"] for e in errs) / len(errs)}
