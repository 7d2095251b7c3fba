"""The CLI chain `sparsa prune` → `quantize` → `eval` → `sim` and a recipe with the same settings give
the same figures: one algorithm per technique, whichever door it is entered by.

The model is a tiny BERT with MiniLM's tokenizer (the real MiniLM takes ~100 s for both paths;
the code paths are the same). Cosine agrees to 1e-6 (both paths run the same float ops on the same
weights, in the same process, so only summation order could differ) and cycles exactly (integers
from the same workload)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import sparsa.cli  # noqa: F401  registers the command modules
from sparsa.cli.app import app

runner = CliRunner()


def _json(result) -> dict:
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def tiny_bert(tiny_text_folder_factory):
    return tiny_text_folder_factory(hidden=64, ffn=128)


# (prune flags, recipe prune fields), (quantize flags, recipe quantize fields): the same settings spelt
# both ways. `activation` importance and `static` activations make both paths calibrate.
CASES = {
    "l1-weights-only": (["--importance", "l1"], {"importance": "l1"},
                        ["--bits", "8", "--clip", "search"], {"bits": 8, "clip": "search"}),
    "activation-static": (["--importance", "activation"], {"importance": "activation"},
                          ["--bits", "6", "--scheme", "asym", "--activations", "static"],
                          {"bits": 6, "scheme": "asym", "activations": "static"}),
    # the least-squares refit (the bundled default recipe's prune stage has one) is a flag on the CLI too
    "refit": (["--importance", "activation", "--refit-samples", "32"], {"importance": "activation", "refit_samples": 32},
              ["--bits", "8"], {"bits": 8}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_cli_chain_equals_recipe(tiny_bert, tmp_path, case):
    from sparsa.pipeline import run_recipe
    from sparsa.recipe import parse_recipe

    prune_flags, prune_fields, quant_flags, quant_fields = CASES[case]
    p, q = tmp_path / "p", tmp_path / "q"
    _json(runner.invoke(app, ["prune", str(tiny_bert), "--heads", "0.25", "--ffn", "0.25", *prune_flags,
                              "--out", str(p), "--json"]))
    _json(runner.invoke(app, ["quantize", str(p), *quant_flags, "--out", str(q), "--json"]))
    ev = _json(runner.invoke(app, ["eval", str(q), "--reference", str(tiny_bert), "--runs", "1", "--json"]))
    sim = _json(runner.invoke(app, ["sim", str(q), "--arch", "hdp-edge", "--json"]))

    stages = {"prune": {"heads": 0.25, "ffn": 0.25, **prune_fields}, "quantize": quant_fields}
    recipe = {
        "name": "chain", "model": str(tiny_bert),
        "stages": [{"type": t, **f} for t, f in stages.items()],
        # only the final figures are compared; latency is not a figure either path fixes
        "evaluation": {"per_stage": False, "latency": None},
        "hardware": {"arch": "hdp-edge", "dense_baseline": False},
    }
    res = run_recipe(parse_recipe(json.dumps(recipe), source="chain.yaml"), tmp_path / "r", quiet=True, html=False)

    assert res["final"]["quality"]["n_texts"] == ev["n_texts"]
    assert res["final"]["quality"]["cosine_mean"] == pytest.approx(ev["cosine_mean"], abs=1e-6)
    assert res["final"]["quality"]["cosine_min"] == pytest.approx(ev["cosine_min"], abs=1e-6)
    assert res["hardware"]["compressed"]["cycles"] == sim["cycles"]
    assert res["hardware"]["seq_len"] == sim["workload"]["seq_len"]
    assert res["final"]["macs"] == ev["macs"]
