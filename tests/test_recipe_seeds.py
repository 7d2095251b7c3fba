"""The bundled seed recipes on the trained fixtures run end to end (at a smaller size: fewer epochs,
fewer evaluation items, no latency runs). The MiniLM recipes (default, seed002) run in `make demo`
and in docs/pipeline.md's measured table; here they are only validated (test_recipe_validation)."""

from __future__ import annotations

import pytest

from sparsa.recipe import load_recipe

FAST = {
    "seed000_video_channels": {"evaluation.latency": None, "evaluation.max_samples": 32},
    "seed001_tolerance_quant": {"evaluation.latency": None, "evaluation.max_samples": 64,
                                "stages.tolerance-prune.budget_s": 5, "stages.tolerance-prune.round_recovery_epochs": 0,
                                "stages.tolerance-prune.max_rounds": 1, "stages.quantize.calib_samples": 8},
    "seed003_penni": {"evaluation.latency": None, "evaluation.max_samples": 64,
                      "stages.decompose.retrain_epochs": 0, "stages.decompose.finetune_epochs": 0},
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
