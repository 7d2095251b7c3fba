"""Sweep backends on the same grid: in-process vs process pool vs local Ray, same results, wall time.

    .venv/bin/python bench/pipeline_sweep.py [--grid recipes/grids/array_shape.yaml] [--recipe gemm_array]

The grid is simulator-only (each point one GEMM on a systolic array), so the table shows each
backend's overhead per point; the identity column checks that every backend stores exactly the
same metrics for every point.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sparsa.dse import SweepStore, load_grid, run_sweep
from sparsa.errors import SparsaError
from sparsa.recipe import load_recipe


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default="gemm_array")
    ap.add_argument("--grid", default=str(Path(__file__).resolve().parents[1] / "recipes/grids/array_shape.yaml"))
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()
    from sparsa.metrics.cpu import cpu_line

    print(cpu_line(), flush=True)  # where every figure below was measured
    loaded, grid = load_recipe(args.recipe), load_grid(args.grid)
    runs = [("inline (workers 0)", dict(workers=0)), ("process pool, 1 worker", dict(workers=1)),
            ("process pool, 2 workers", dict(workers=2))]
    if not args.no_ray:
        runs.append(("Ray local, 2 CPUs", dict(workers=2, ray_address="local")))
    rows, ref = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, kw) in enumerate(runs):
            out = Path(tmp) / f"run{i}"  # each backend its own store: nothing resumed from another
            t0 = time.perf_counter()
            try:
                s = run_sweep(loaded, grid, out, report=False, **kw)
            except SparsaError as e:  # e.g. Ray's 30 s raylet start timeout on a saturated host
                rows.append((label, 0, -1, time.perf_counter() - t0, False))
                Console(stderr=True).print(f"{label}: {e.message}")
                continue
            wall = time.perf_counter() - t0
            metrics = {k: r["metrics"] for k, r in SweepStore(out).latest().items()}
            ref = ref or metrics
            rows.append((label, s.total, s.errors, wall, metrics == ref))
    base = rows[0][3]
    t = Table(title=f"sweep backends: {loaded.recipe.name} × {Path(args.grid).name} "
                    f"(load avg {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs)")
    for c in ("backend", "points", "errors", "wall s (incl. start-up)", "vs inline", "same metrics"):
        t.add_column(c)
    for label, n, err, wall, same in rows:
        t.add_row(label, str(n), str(err), f"{wall:.2f}", f"{wall / base:.2f}×", "yes" if same else "NO")
    Console().print(t)


if __name__ == "__main__":
    main()
