"""The least-squares refit's budget: its cost model counts what the refit runs, and a budget keeps
the leading samples that fit, so a budgeted refit is exactly the unbudgeted refit on those samples."""

from __future__ import annotations

import pytest
import torch

from sparsa.models.tiny import tiny_model
from sparsa.prune import PrunePlan, prune
from sparsa.prune import refit_budget as rb
from sparsa.prune.oneshot import prune_oneshot
from sparsa.prune.recover import lstsq_refit


def _inputs(dense, n, seq=16):
    g = torch.Generator().manual_seed(5)
    return {k: (torch.randint(5, 90, (n, seq), generator=g) if k == "input_ids"
                else v.repeat(n, *[1] * (v.dim() - 1))) for k, v in dense.example_inputs(batch=1, seq_len=seq).items()}


def _jobs(lm):
    return [p for h, f in zip(lm.adapter.head_groups(), lm.adapter.ffn_groups()) for p in (h.o, f.fc2)]


def test_macs_per_token_counts_both_forwards_up_to_each_layer_and_the_normal_equations():
    dense = tiny_model("bert")
    pruned = prune(dense, PrunePlan(heads=0.5, ffn=0.5))
    jobs = _jobs(pruned)

    def prefix(model, path):  # Linear multiply-adds in registration order, up to and including `path`
        total = 0
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.Linear):
                total += m.in_features * m.out_features
                if name == path:
                    return total
        raise AssertionError(path)

    want = 0
    for p in jobs:
        lin = pruned.model.get_submodule(p)
        want += prefix(pruned.model, p) + prefix(dense.model, p) + (lin.in_features + 1) * (lin.in_features + 1 + lin.out_features)
    assert rb.macs_per_token(pruned.model, dense.model, jobs) == want
    # deeper layers cost more: the last job's prefix exceeds the first's
    assert prefix(dense.model, jobs[-1]) > prefix(dense.model, jobs[0])


@pytest.mark.parametrize("fraction", [0.0, 0.4, 10.0])
def test_a_budgeted_refit_is_the_plain_refit_on_the_samples_that_fit(fraction):
    dense = tiny_model("bert")
    x = _inputs(dense, 24)
    per_sample = rb.macs_per_token(prune(dense, PrunePlan(heads=0.5, ffn=0.5)).model, dense.model,
                                   _jobs(dense)) * x["input_ids"].shape[1]
    a = prune(dense, PrunePlan(heads=0.5, ffn=0.5))
    rep = lstsq_refit(a, dense, x, n_samples=24, budget_macs=fraction * 24 * per_sample)
    k = rep["budget"]["samples"]
    expect = {0.0: rb.MIN_SAMPLES, 0.4: int(0.4 * 24), 10.0: 24}[fraction]
    assert k == expect == rep["n_samples"]
    assert rep["budget"]["samples_available"] == 24
    assert rep["budget"]["macs"] == k * per_sample and rep["budget"]["macs_per_token"] * x["input_ids"].shape[1] == per_sample
    b = prune(dense, PrunePlan(heads=0.5, ffn=0.5))
    lstsq_refit(b, dense, {n: v[:k] for n, v in x.items()}, n_samples=24)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[n], sb[n]) for n in sa)  # the same arithmetic on the same samples


def test_prune_oneshot_records_the_budget_and_reports_progress():
    dense = tiny_model("bert")
    lines = []
    _, refit = prune_oneshot(dense, PrunePlan(heads=0.5, ffn=0.5), calib=None, refit_samples=16,
                             refit_data=_inputs(dense, 16), progress=lines.append)
    assert refit["samples_requested"] == 16 and refit["samples"] == 16  # a tiny model fits the budget whole
    assert refit["budget"]["budget_macs"] == rb.REFIT_BUDGET_MACS
    assert refit["budget"]["macs"] <= rb.REFIT_BUDGET_MACS
    assert "fit its budget" in lines[0]
    assert sum("relative error" in m for m in lines) == 2 * len(dense.adapter.head_groups())
