"""τ_H calibration: the returned threshold prunes the requested share of heads on the calibration data."""

import pytest
import torch

from sparsa.attention import install, uninstall
from sparsa.attention.calibrate import calibrate_tau_h, head_importances
from sparsa.errors import SparsaError
from sparsa.models.tiny import tiny_model


def _inputs():
    g = torch.Generator().manual_seed(0)
    out = []
    for n in (9, 14):
        ids = torch.randint(5, 1000, (3, n), generator=g)
        mask = torch.ones(3, n, dtype=torch.long)
        mask[2, n - 3:] = 0  # padding: θ_H counts valid positions only
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def _pruned_share(lm, data, **opts):
    ctrl = install(lm.model, "hdp", **opts)
    pruned = heads = 0
    with torch.no_grad():
        for inputs in data:
            lm.model(**inputs)
            pruned += sum(s["pruned_heads"] for s in ctrl.layer_stats)
            heads += sum(s["heads"] for s in ctrl.layer_stats)
    uninstall(lm.model)
    return pruned / heads


@pytest.mark.parametrize("tau_mode", ["abs", "mean"])
def test_calibrated_tau_h_prunes_requested_ratio(tau_mode):
    lm = tiny_model("bert")
    data = _inputs()
    opts = dict(tau_mode=tau_mode, imp_bits=4)  # tiny random Q·K: integer parts alone are all 0
    theta = head_importances(lm, data, **opts)
    assert theta.unique().numel() > theta.numel() // 2  # distinct importances to rank
    n = theta.numel()
    for ratio in (0.25, 0.5):
        tau = calibrate_tau_h(lm, data, ratio, **opts)
        share = _pruned_share(lm, data, tau_h=tau, **opts)
        # pruning heads of early layers shifts later layers' θ_H (calibration runs unpruned): close, not exact
        assert abs(share - ratio) <= 0.1, (ratio, share)
        ranked = theta.sort().values
        assert (theta < tau).sum() <= round(ratio * n) and (theta <= ranked[round(ratio * n)]).sum() >= round(ratio * n)
    assert calibrate_tau_h(lm, data, 0.0, **opts) == 0.0
    assert _pruned_share(lm, data, tau_h=0.0, **opts) == 0.0


def test_calibrate_bad_input():
    lm = tiny_model("bert")
    with pytest.raises(SparsaError, match="ratio"):
        calibrate_tau_h(lm, _inputs(), 1.5)
    with pytest.raises(SparsaError, match="hdp"):
        calibrate_tau_h(lm, _inputs(), 0.2, method="topk")
    with pytest.raises(SparsaError, match="type"):
        calibrate_tau_h(lm, 3.0, 0.2)
