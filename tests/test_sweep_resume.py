"""Sweeps: a killed sweep resumes with every point done exactly once; crashes are recorded; bad grids refused.

The points are simulator-only recipes (one GEMM on a systolic preset), so each point is real work
(the cycle-level simulator) yet takes milliseconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("sparsa.hw.sim")

from sparsa.dse import SweepStore, load_grid, point_key, run_sweep  # noqa: E402
from sparsa.dse.point import evaluate_point  # noqa: E402
from sparsa.errors import SparsaError  # noqa: E402
from sparsa.recipe import load_recipe  # noqa: E402

RECIPE = """\
name: gemm-sweep
hardware:
  arch: systolic-32-os
  gemm: [1024, 1024, 1024]
"""

GRID = """\
params:
  hardware.params.array.rows: [4, 8, 12, 16, 20, 24, 28, 32, 40, 48]
  hardware.params.array.cols: [4, 8, 12, 16, 20, 24, 28, 32, 40, 48]
objectives:
  - {metric: hardware.compressed.cycles, goal: min}
  - {metric: hardware.compressed.energy_pj, goal: min}
"""


def _files(tmp_path, grid=GRID):
    r = tmp_path / "recipe.yaml"
    g = tmp_path / "grid.yaml"
    r.write_text(RECIPE)
    g.write_text(grid)
    return r, g


def _valid_rows(store_path) -> list[dict]:
    rows = []
    for line in store_path.read_bytes().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
    return rows


# `sparsa sweep` with its store's append held after the 8th point: the test kills it at that point
# (a condition it waits for), not after a sleep that a fast or slow machine would win or lose.
HELD_SWEEP = """
import os, sys, threading
from sparsa.dse.store import SweepStore
real, n = SweepStore.append, [0]
def append(self, row, full=None):
    real(self, row, full)
    n[0] += 1
    if n[0] == 8:
        open(os.environ["SPARSA_TEST_HELD"], "w").close()
        threading.Event().wait()  # until killed
SweepStore.append = append
from sparsa.cli import main
sys.argv[0] = "sparsa"
main()
"""


def _wait_for(condition, proc, what):
    """Poll until `condition()`; the deadline only turns a hang into a failure."""
    deadline = time.monotonic() + 300
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the process ended before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after 300 s")
        time.sleep(0.02)


def test_killed_sweep_resumes_every_point_exactly_once(tmp_path):
    recipe, grid = _files(tmp_path)
    out = tmp_path / "sweep"
    args = ["sweep", str(recipe), "--grid", str(grid), "--out", str(out), "--json"]
    cmd = [sys.executable, "-m", "sparsa", *args]
    held = tmp_path / "held"
    env = dict(os.environ, COLUMNS="400", SPARSA_TEST_HELD=str(held))
    proc = subprocess.Popen([sys.executable, "-c", HELD_SWEEP, *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    store_path = out / "store.jsonl"
    try:
        _wait_for(held.exists, proc, "the 8th point was stored")
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its pool workers, mid-way
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = {r["key"]: r for r in _valid_rows(store_path)}
    assert len(before) == 8, "the kill lands after the 8th point"
    (out / "points" / f".{next(iter(before))}.json.x1y2.tmp").write_text("{")  # a write the kill cut short

    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["skipped"] == len(before)  # nothing redone
    assert summary["ran"] == 100 - len(before)  # nothing left out
    assert summary["errors"] == 0

    rows = _valid_rows(store_path)
    keys = [row["key"] for row in rows]
    assert len(keys) == len(set(keys)) == 100  # every point exactly once
    loaded = load_recipe(recipe)
    g = load_grid(grid)
    from sparsa.dse.grid import expand

    expected = {point_key(loaded.raw, p): p for p in expand(g)}
    assert set(keys) == set(expected)
    for row in rows:
        if row["key"] in before:
            assert row == before[row["key"]]  # rows written before the kill are untouched
    # no result lost or corrupted: each stored metric equals a fresh evaluation of its point
    for row in rows[::7]:
        fresh = evaluate_point(loaded.raw, loaded.source, str(loaded.base_dir), expected[row["key"]])
        assert fresh["status"] == "ok"
        assert row["metrics"] == json.loads(json.dumps(fresh["metrics"]))
        full = SweepStore(out).full_result(row["key"])
        assert full["row"]["key"] == row["key"]
    assert (out / "sweep_report.html").exists() and (out / "pareto.json").exists()
    assert not list(out.rglob("*.tmp")), "the resumed sweep removes the killed one's temp files"


def test_torn_last_line_is_not_a_result_and_next_append_is_clean(tmp_path):
    store = SweepStore(tmp_path)
    store.append({"key": "a", "status": "ok", "metrics": {"x": 1}})
    with open(store.path, "ab") as f:
        f.write(b'{"key": "b", "status": "o')  # a writer killed mid-line
    assert store.done_keys() == {"a"}
    store.append({"key": "b", "status": "ok", "metrics": {"x": 2}})
    assert store.done_keys() == {"a", "b"}
    assert store.latest()["b"]["metrics"] == {"x": 2}


def test_a_crashing_point_is_recorded_and_the_sweep_goes_on(tmp_path):
    grid = """\
params:
  hardware.params.dram.bandwidth_bytes_per_cycle: [16, 0, 64]
objectives:
  - {metric: hardware.compressed.cycles, goal: min}
"""
    recipe, g = _files(tmp_path, grid)
    summary = run_sweep(load_recipe(recipe), load_grid(g), tmp_path / "s", workers=0)
    assert (summary.total, summary.ran, summary.errors, summary.backend) == (3, 3, 1, "inline")
    rows = SweepStore(tmp_path / "s").latest().values()
    bad = [r for r in rows if r["status"] == "error"]
    assert len(bad) == 1 and bad[0]["overrides"] == {"hardware.params.dram.bandwidth_bytes_per_cycle": 0}
    assert "bandwidth" in bad[0]["error"]
    assert sum(r["status"] == "ok" for r in rows) == 2
    # a resumed sweep does not retry the recorded crash
    again = run_sweep(load_recipe(recipe), load_grid(g), tmp_path / "s", workers=1, report=False)  # a real pool
    assert (again.skipped, again.ran) == (3, 0)


@pytest.mark.parametrize(
    "grid, message",
    [
        ("params:\n  hardware.params.array.rows: []\n", "expand to nothing"),
        ("params: {}\n", "params is empty"),
        ("params:\n  hardware.params.array.rows: {low: 4, high: 8}\n", "use a list of values for mode 'grid'"),
        ("mode: random\nparams:\n  hardware.params.array.rows: [4]\n", "needs samples"),
        ("params:\n  stages.prune.heads: [0.5]\n", "no stage named or typed 'prune'"),
        ("params:\n  hardware.gemm: [[1, 2]]\n", "three positive integers"),
    ],
)
def test_bad_grids_fail_before_any_work(tmp_path, grid, message):
    recipe, g = _files(tmp_path, grid)
    with pytest.raises(SparsaError) as e:
        run_sweep(load_recipe(recipe), load_grid(g), tmp_path / "s")
    assert message in str(e.value)
    assert not (tmp_path / "s" / "store.jsonl").exists()


def test_grid_errors_name_the_line(tmp_path):
    _, g = _files(tmp_path, "params:\n  a.b: [1]\nobjectives:\n  - {metric: x, goal: up}\n")
    with pytest.raises(SparsaError, match=r"grid.yaml:4: objectives\[0\].goal"):
        load_grid(g)


def test_random_and_optuna_searches_store_and_resume(tmp_path):
    grid = """\
mode: {mode}
params:
  hardware.params.array.rows: [4, 8, 16, 32]
  hardware.params.dram.bandwidth_bytes_per_cycle: {{low: 2, high: 64, log: true, int: true}}
samples: 6
seed: 3
objectives:
  - {{metric: hardware.compressed.latency_s, goal: min}}
  - {{metric: hardware.compressed.energy_pj, goal: min}}
"""
    for mode in ("random", "optuna"):
        recipe, g = _files(tmp_path, grid.format(mode=mode))
        out = tmp_path / mode
        first = run_sweep(load_recipe(recipe), load_grid(g), out, workers=0, report=False)
        rows = _valid_rows(out / "store.jsonl")
        keys = [r["key"] for r in rows]
        assert first.errors == 0 and len(keys) == len(set(keys)) == first.ran <= 6
        for r in rows:
            bw = r["overrides"]["hardware.params.dram.bandwidth_bytes_per_cycle"]
            assert isinstance(bw, int) and 2 <= bw <= 64
        again = run_sweep(load_recipe(recipe), load_grid(g), out, workers=0, report=False)
        assert again.ran == 0 and len(_valid_rows(out / "store.jsonl")) == len(rows)  # resumed: nothing redone
        assert first.pareto and {r["key"] for r in first.pareto} <= set(keys)
