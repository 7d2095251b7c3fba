"""The same sweep on a local Ray cluster (2 CPUs) gives exactly the process pool's results."""

from __future__ import annotations

import pytest

pytest.importorskip("sparsa.hw.sim")
ray = pytest.importorskip("ray")

from sparsa.dse import SweepStore, load_grid, run_sweep  # noqa: E402
from sparsa.errors import SparsaError  # noqa: E402
from sparsa.recipe import load_recipe  # noqa: E402

RECIPE = """\
name: gemm-ray
hardware:
  arch: hdp-edge
  gemm: [128, 384, 384]
"""

GRID = """\
params:
  hardware.gemm: [[128, 384, 384], [128, 384, 1536], [128, 1536, 384]]
  hardware.params.cores: [1, 2]
  hardware.params.dram.bandwidth_bytes_per_cycle: [4, 16]
objectives:
  - {metric: hardware.compressed.latency_s, goal: min}
  - {metric: hardware.compressed.energy_pj, goal: min}
"""


def test_ray_local_matches_process_pool(tmp_path):
    (tmp_path / "r.yaml").write_text(RECIPE)
    (tmp_path / "g.yaml").write_text(GRID)
    loaded, grid = load_recipe(tmp_path / "r.yaml"), load_grid(tmp_path / "g.yaml")

    pool = run_sweep(loaded, grid, tmp_path / "pool", workers=2, report=False)
    on_ray = None
    for attempt in range(2):  # Ray's raylet has a fixed 30 s start timeout that a saturated host can miss
        try:
            on_ray = run_sweep(loaded, grid, tmp_path / "ray", workers=2, ray_address="local", report=False)
            break
        except SparsaError as e:
            if "could not start" not in e.message:
                raise
            reason = e.message
    if on_ray is None:
        pytest.skip(f"Ray did not start on this machine (twice): {reason}")
    assert (pool.backend, on_ray.backend) == ("process-pool", "ray")
    assert pool.total == on_ray.total == 12 and pool.errors == on_ray.errors == 0

    a = {k: (r["overrides"], r["metrics"]) for k, r in SweepStore(tmp_path / "pool").latest().items()}
    b = {k: (r["overrides"], r["metrics"]) for k, r in SweepStore(tmp_path / "ray").latest().items()}
    assert a == b  # same points, same keys, bit-identical metrics
    assert [r["key"] for r in pool.pareto] == [r["key"] for r in on_ray.pareto]
    assert not ray.is_initialized()  # the sweep shut down the cluster it started
