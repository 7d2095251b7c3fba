"""Evaluate one sweep point: apply its overrides to the recipe, run the pipeline, return plain data.

Runs inside a worker process (process pool or Ray task), so it takes and returns only plain data
and never raises: a crash becomes an `error` result that the sweep records and moves past.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any


def evaluate_point(recipe_raw: dict, source: str, base_dir: str, overrides: dict[str, Any], threads: int = 1) -> dict:
    t0 = time.perf_counter()
    try:
        from sparsa.pipeline import run_recipe
        from sparsa.recipe import recipe_from_dict

        loaded = recipe_from_dict(recipe_raw, overrides=overrides, source=source, base_dir=Path(base_dir))
        result = run_recipe(loaded, out_dir=None, html=False, quiet=True, threads=threads)
        return {
            "status": "ok",
            "metrics": flatten_metrics(result),
            "result": result,
            "error": None,
            "wall_s": time.perf_counter() - t0,
        }
    except Exception as e:  # noqa: BLE001 - a point's crash is data for the sweep, not the sweep's end
        tb = traceback.format_exc().strip().splitlines()
        return {
            "status": "error",
            "metrics": {},
            "result": None,
            "error": f"{type(e).__name__}: {e}",
            "traceback": "\n".join(tb[-25:]),
            "wall_s": time.perf_counter() - t0,
        }


# measured wall-clock numbers differ run to run; the store keeps them but they are not the point's identity
_SKIP_PREFIXES = ("provenance", "recipe", "host", "timing")


def flatten_metrics(result: dict, prefix: str = "") -> dict[str, float | int | str | bool]:
    """Scalar leaves of a result as dotted keys (lists of per-op/per-layer detail are left out)."""
    out: dict[str, Any] = {}
    for k, v in result.items():
        key = f"{prefix}{k}"
        if not prefix and k in _SKIP_PREFIXES:
            continue
        if isinstance(v, dict):
            out.update(flatten_metrics(v, key + "."))
        elif isinstance(v, bool) or isinstance(v, (int, float, str)) or v is None:
            out[key] = v
    return out
