"""The least-squares refit after pruning works on every transformer family: it lowers each refit
projection's error against the dense model, and on BERT-style blocks only there is a residual to
compensate (DistilBERT and ViT pass no residual to the block that holds the projection)."""

from __future__ import annotations

import pytest
import torch

from sparsa.models.tiny import tiny_model
from sparsa.prune import PrunePlan, prune
from sparsa.prune.recover import lstsq_refit


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "vit", "deit", "swin", "videomae"])
def test_refit_lowers_the_projection_error(family):
    dense = tiny_model(family)
    pruned = prune(dense, PrunePlan(heads=0.5, ffn=0.5))
    g = torch.Generator().manual_seed(3)
    x = {k: (torch.randn(8, *v.shape[1:], generator=g) if v.is_floating_point()
             else v.repeat(8, *[1] * (v.dim() - 1))) for k, v in dense.example_inputs(batch=1, seq_len=16).items()}
    report = lstsq_refit(pruned, dense, x, n_samples=8, ridge=1e-4)
    errs = report["layers"]
    assert len(errs) == 2 * len(dense.adapter.head_groups())  # attention-out and FFN-out of every layer
    assert all(e["rel_err_after"] <= e["rel_err_before"] + 1e-9 for e in errs)
    assert sum(e["rel_err_after"] for e in errs) < sum(e["rel_err_before"] for e in errs)
