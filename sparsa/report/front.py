"""The demo model's measured quality/speed front, for the run report.

The front is bundled data written by `bench/front.py` (one JSON per model, labelled with the CPU,
date and command that measured it): timing a dozen candidates in interleaved rounds costs minutes,
far more than a `sparsa run`, so the report reads the measurement instead of repeating it, and
marks this run's own point (its ONNX Runtime and PyTorch latency, timed on this host) beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

# model name (as a recipe spells it) -> bundled front
FRONTS = {"minilm": Path(__file__).parent / "data" / "minilm_front.json"}


def bundled_front(model: str | None) -> dict | None:
    path = FRONTS.get(model or "")
    if path is None or not path.exists():
        return None
    return json.loads(path.read_text())


def this_run_point(results: dict) -> dict | None:
    """This run's speed-up (ONNX Runtime vs PyTorch dense, both timed in this run) and cosine."""
    lat = results.get("latency") or {}
    ort, dense = lat.get("onnxruntime") or {}, lat.get("torch_dense") or {}
    cos = ((results.get("final") or {}).get("quality") or {}).get("cosine_mean")
    if not (ort.get("median_ms") and dense.get("median_ms")) or cos is None:
        return None
    return {"speedup": dense["median_ms"] / ort["median_ms"], "cosine": float(cos), "ms": ort["median_ms"]}
