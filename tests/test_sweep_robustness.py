"""Sweep robustness: stale temp files cleaned on resume, pool workers die with their driver,
oversized grids refused before expansion, objectives naming no metric refused."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("sparsa.hw.sim")

from sparsa.dse import SweepStore, load_grid, run_sweep  # noqa: E402
from sparsa.dse.grid import MAX_POINTS  # noqa: E402
from sparsa.errors import SparsaError  # noqa: E402
from sparsa.recipe import load_recipe  # noqa: E402

RECIPE = "name: gemm-sweep\nhardware:\n  arch: systolic-32-os\n  gemm: [64, 64, 64]\n"
OBJECTIVE = "objectives:\n  - {metric: hardware.compressed.cycles, goal: min}\n"


def _sweep_files(tmp_path, grid):
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    (tmp_path / "grid.yaml").write_text(grid)
    return load_recipe(tmp_path / "recipe.yaml"), load_grid(tmp_path / "grid.yaml")


def _wait_for(condition, what):
    """Poll until `condition()`; the deadline only turns a hang into a failure."""
    deadline = time.monotonic() + 120
    while not condition():
        assert time.monotonic() < deadline, f"no {what} after 120 s"
        time.sleep(0.02)


def test_stale_temp_files_are_removed_on_resume_but_not_under_a_live_sweep(tmp_path):
    loaded, grid = _sweep_files(tmp_path, "params:\n  hardware.params.array.rows: [4, 8]\n" + OBJECTIVE)
    out = tmp_path / "s"
    (out / "points").mkdir(parents=True)
    stale = [out / "points" / ".0123abcd.json.k2j3.tmp", out / ".pareto.json.a1b2.tmp"]
    keep = out / "points" / "notes.txt"
    for p in stale + [keep]:
        p.write_text("{")
    # another sweep holds the store: its temp files may be live, nothing is removed
    fd = os.open(out / ".sweep.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_SH)
    try:
        assert SweepStore(out).clean_stale_temp_files() == []
        assert all(p.exists() for p in stale)
    finally:
        os.close(fd)
    summary = run_sweep(loaded, grid, out, workers=0, report=False)
    assert summary.ran == 2
    assert not any(p.exists() for p in stale) and keep.exists()
    assert not list(out.rglob("*.tmp"))


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc (Linux)")
def test_pool_workers_die_when_the_driver_is_killed(tmp_path):
    driver = (
        "import os, threading, time\n"
        "from sparsa.dse.sweep import _ProcessPool\n"
        "ex = _ProcessPool(2)._executor(2)\n"
        "[f.result() for f in [ex.submit(os.getpid) for _ in range(4)]]\n"
        "[ex.submit(time.sleep, 3600) for _ in range(2)]  # busy workers\n"
        "print(*sorted(ex._processes), flush=True)\n"
        "threading.Event().wait()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, text=True)
    workers = []
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert len(workers) == 2 and all(_running(p) for p in workers)
        proc.kill()  # the driver only, as an OOM killer or `kill -9 <pid>` would
        proc.wait()
        _wait_for(lambda: not any(_running(p) for p in workers), "exit of the orphaned workers")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in workers:
            if _running(p):
                os.kill(p, signal.SIGKILL)


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited (its reaper may be slow)


def test_a_grid_past_the_point_limit_is_refused_before_expansion(tmp_path, monkeypatch):
    from sparsa.dse import grid as grid_mod

    values = "[" + ", ".join(str(4 * (i + 1)) for i in range(9)) + "]"
    params = "".join(f"  hardware.params.array.{p}: {values}\n" for p in ("rows", "cols"))
    params += "".join(f"  stages.x{i}.y: {values}\n" for i in range(6))  # 8 params x 9 values: 43 million points
    loaded, grid = _sweep_files(tmp_path, "params:\n" + params + OBJECTIVE)
    monkeypatch.setattr(grid_mod.itertools, "product", lambda *a: pytest.fail("the grid was expanded"))
    with pytest.raises(SparsaError) as e:
        run_sweep(loaded, grid, tmp_path / "s")
    assert f"{9 ** 8:,} points" in str(e.value) and f"{MAX_POINTS:,}" in str(e.value)
    assert "mode: random" in e.value.hint
    assert not (tmp_path / "s").exists()
    _, rnd = _sweep_files(tmp_path, f"mode: random\nsamples: {MAX_POINTS + 1}\nparams:\n  hardware.params.array.rows: [4]\n")
    with pytest.raises(SparsaError, match="samples"):
        run_sweep(loaded, rnd, tmp_path / "s")


def test_an_objective_naming_no_metric_is_refused_with_the_metrics_listed(tmp_path):
    grid = "params:\n  hardware.params.array.rows: [4, 8, 16]\nobjectives:\n  - {metric: cycles, goal: min}\n"
    loaded, g = _sweep_files(tmp_path, grid)
    with pytest.raises(SparsaError) as e:
        run_sweep(loaded, g, tmp_path / "s", workers=0, report=False)
    assert "cycles" in str(e.value) and "hardware.compressed.cycles" in e.value.hint
    assert len(SweepStore(tmp_path / "s").done_keys()) == 1  # refused at the first point, not after all
    # the CLI refuses too (its main() prints SparsaError as 'error: ... hint: ...', exit 2), not an empty front
    from typer.testing import CliRunner

    from sparsa.cli import app

    r = CliRunner().invoke(app, ["sweep", str(tmp_path / "recipe.yaml"), "--grid", str(tmp_path / "grid.yaml"),
                                 "--out", str(tmp_path / "s"), "--workers", "0"])
    assert isinstance(r.exception, SparsaError) and "hardware.compressed.cycles" in r.exception.hint
