"""The run's latency section says when its PyTorch row is not a deployment figure: a quantized model runs
in PyTorch as a float simulation (codes dequantized on every call), so `torch` may be slower than
`torch_dense`, and the integer model's latency is ONNX Runtime's row."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import sparsa.cli  # noqa: F401  registers the command modules
from sparsa.cli.app import app

runner = CliRunner()


@pytest.mark.parametrize("stage, quantized", [({"type": "quantize", "bits": 8}, True),
                                              ({"type": "prune", "heads": 0.5}, False)])
def test_latency_note_names_the_float_simulation_of_a_quantized_model(tiny_text_folder, tmp_path, stage, quantized):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({
        "name": "lat", "model": str(tiny_text_folder), "stages": [stage],
        "evaluation": {"quality": False, "seq_len": 16,
                       "latency": {"torch": True, "onnxruntime": False, "runs": 2, "warmup": 0, "threads": 1}},
        "report": {"html": False}}))
    r = runner.invoke(app, ["run", str(recipe), "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, (r.output, r.exception)
    lat = json.loads((tmp_path / "out" / "results.json").read_text())["latency"]
    assert lat["torch"]["median_ms"] > 0 and lat["torch_dense"]["median_ms"] > 0
    assert ("float simulation" in (lat.get("note") or "")) is quantized
