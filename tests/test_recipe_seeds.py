"""The bundled seed recipes on the trained fixtures run end to end (at a smaller size: fewer epochs,
fewer evaluation items, no latency runs). The MiniLM recipes (default, seed002) run in `make demo`
and in docs/pipeline.md's measured table; here they are only validated (test_recipe_validation)."""

from __future__ import annotations

import pytest

from sparsa.recipe import load_recipe

FAST = {
    "seed000_video_channels": {"evaluation.latency": None, "evaluation.max_samples": 32},
    "seed001_tolerance_quant": {"evaluation.latency": None, "evaluation.max_samples": 64,
                                "stages.tolerance-prune.budget_s": None,  # no wall-clock cap: max_rounds bounds the work
                                "stages.tolerance-prune.round_recovery_epochs": 0,
                                "stages.tolerance-prune.max_rounds": 1, "stages.quantize.calib_samples": 8},
    "seed003_penni": {"evaluation.latency": None, "evaluation.max_samples": 64,
                      "stages.decompose.retrain_epochs": 0, "stages.decompose.finetune_epochs": 0,
                      "stages.quantize.hybrid_epochs": 1},
}


def _fixture_missing(name: str) -> str | None:
    from pathlib import Path

    import sparsa

    d = Path(sparsa.__file__).parent / "fixtures" / name
    return None if d.is_dir() and any(d.iterdir()) else f"fixture {name} is not trained yet (make fixtures)"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAST))
def test_seed_recipe_runs_end_to_end(name, tmp_path):
    loaded = load_recipe(name, overrides=FAST[name])
    reason = _fixture_missing(loaded.recipe.model)
    if reason:
        pytest.skip(reason)
    from sparsa.pipeline import run_recipe

    res = run_recipe(loaded, tmp_path / name, quiet=True)
    labels = [s["label"] for s in res["stages"]]
    assert labels == ["dense"] + loaded.recipe.stage_labels()
    q0, qf = res["stages"][0]["quality"], res["final"]["quality"]
    assert q0["metric"] == "accuracy" and 0.0 <= qf["value"] <= 1.0
    assert res["final"]["ratios"]["nonzero_params_ratio"] < 1.0  # something was really removed
    assert "--set" in res["provenance"]["command"]  # the overrides are part of the re-create command
    if loaded.recipe.hardware is not None:
        assert res["hardware"]["compressed"]["cycles"] > 0
    assert (tmp_path / name / "report.html").exists()
    if name == "seed001_tolerance_quant":
        _check_seed001_hardware(tmp_path / name)


def _check_seed001_hardware(out):
    """The pruned, 8-bit Swin simulated next to the dense one on swin-fpga, with per-op reasons: the
    preset has no zero-skipping or compressed weight storage and computes at 8 bits, so neither the
    zeros nor the 8-bit codes save anything, and every quantized GEMM says why."""
    import json

    hw = json.loads((out / "results.json").read_text())["hardware"]
    assert hw["arch"] == "swin-fpga"
    for which in ("dense", "compressed"):
        assert hw[which]["latency_s"] > 0 and hw[which]["energy_pj"] > 0
    assert hw["compressed"]["cycles"] == hw["dense"]["cycles"]  # nothing exploitable on this preset
    assert hw["exploits"]["weight_zero_skipping"] is False
    quantized = [op for op in hw["ops"] if any(r.startswith("weight_bits=8") for r in op["not_exploited"])]
    assert quantized and all(op["kind"] == "gemm" for op in quantized)
    sparse = [op for op in hw["ops"] if any("weight_density=" in r and "no weight zero-skipping" in r
                                            for r in op["not_exploited"])]
    assert sparse  # the tolerance schedule's zeros reach the simulator, and it says it did not use them
    not_exp = hw["reasons"]["compressed"]["not_exploited"]
    assert sum(n for r, n in not_exp.items() if r.startswith("weight_bits=8")) == len(quantized)
    assert sum(n for r, n in not_exp.items() if "no weight zero-skipping" in r) == len(sparse)
    assert not hw["reasons"]["compressed"]["exploited"]
    html = (out / "report.html").read_text()
    assert "What the preset exploits" in html and "no weight zero-skipping" in html


@pytest.mark.slow
def test_prune_stage_refit_lowers_the_block_error_and_keeps_accuracy(tmp_path):
    """`refit_samples` re-solves the output projections after pruning: the recorded reconstruction
    error falls and the pruned model is at least as accurate as without the refit."""
    base = FAST["seed000_video_channels"]
    plain = load_recipe("seed000_video_channels", overrides=base)
    reason = _fixture_missing(plain.recipe.model)
    if reason:
        pytest.skip(reason)
    from sparsa.pipeline import run_recipe

    refit = load_recipe("seed000_video_channels", overrides=base | {"stages.prune.refit_samples": 48})
    a = run_recipe(plain, tmp_path / "plain", quiet=True)
    b = run_recipe(refit, tmp_path / "refit", quiet=True)
    rec = b["stages"][1]["record"]["refit"]
    assert rec["samples"] == 48 and rec["rel_err_after"] < rec["rel_err_before"]
    assert "refit" not in a["stages"][1]["record"]
    assert b["final"]["quality"]["value"] >= a["final"]["quality"]["value"]
