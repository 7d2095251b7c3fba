"""Run a sweep: points of a grid over a recipe, on a local process pool or a Ray cluster.

Finished points are appended to a `SweepStore` as they complete; a restarted sweep reads the store
and runs only the points whose key is not there yet. A point that crashes is recorded with its
error and the sweep goes on. At the end: the Pareto front over the grid's objectives.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sparsa.dse.grid import Grid, check_size, expand, point_key
from sparsa.dse.lifeline import die_with_parent
from sparsa.dse.point import evaluate_point
from sparsa.dse.store import SweepStore
from sparsa.errors import SparsaError
from sparsa.recipe import LoadedRecipe, recipe_from_dict


@dataclass
class SweepSummary:
    out_dir: str
    total: int
    skipped: int  # already in the store when this run started
    ran: int
    errors: int
    backend: str
    wall_s: float
    pareto: list[dict] = field(default_factory=list)
    objectives: list[dict] = field(default_factory=list)
    report: str | None = None
    command: str | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


# ---------------------------------------------------------------- backends


class _ProcessPool:
    """At most `workers` points in flight on a spawn-started process pool."""

    name = "process-pool"

    def __init__(self, workers: int):
        import multiprocessing as mp

        self.workers = workers
        self._ctx = mp.get_context("spawn")  # no fork of a parent that holds torch threads
        self._pool = None  # started on the first point: a fully resumed sweep starts no process
        self._futs: dict = {}

    def capacity(self) -> int:
        return self.workers - len(self._futs)

    def _executor(self, workers: int) -> ProcessPoolExecutor:
        # workers die with this driver (a SIGKILL of the driver alone would leave them orphaned)
        return ProcessPoolExecutor(max_workers=workers, mp_context=self._ctx,
                                   initializer=die_with_parent, initargs=(os.getpid(),))

    def submit(self, key: str, args: tuple) -> None:
        if self._pool is None:
            self._pool = self._executor(self.workers)
        self._futs[self._pool.submit(evaluate_point, *args)] = (key, args)

    def inflight(self) -> int:
        return len(self._futs)

    def wait_one(self) -> list[tuple[str, dict]]:
        done, _ = wait(list(self._futs), return_when=FIRST_COMPLETED)
        out = []
        broken = []
        for f in done:
            key, args = self._futs.pop(f)
            try:
                out.append((key, f.result()))
            except BrokenProcessPool:
                broken.append((key, args))
        if broken:
            out += self._recover(broken)
        return out

    def _recover(self, broken: list) -> list[tuple[str, dict]]:
        # a worker died (segfault, OOM kill): every in-flight future fails with it. Re-run each
        # suspect alone in a fresh one-worker pool, so only the point that really kills its
        # worker is recorded as an error.
        for f, (key, args) in list(self._futs.items()):
            broken.append((key, args))
        self._futs.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)
        out = []
        for key, args in broken:
            solo = self._executor(1)
            try:
                out.append((key, solo.submit(evaluate_point, *args).result()))
            except BrokenProcessPool:
                out.append((key, {"status": "error", "metrics": {}, "result": None, "wall_s": None,
                                  "error": "the worker process died while running this point (crash or killed)"}))
            finally:
                solo.shutdown(wait=False, cancel_futures=True)
        self._pool = self._executor(self.workers)
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


class _InlinePool:
    """`workers=0`: points run one by one in this process (debugging, tiny sweeps, tests)."""

    name = "inline"
    workers = 1

    def __init__(self):
        self._todo: list = []

    def capacity(self) -> int:
        return 1 - len(self._todo)

    def submit(self, key: str, args: tuple) -> None:
        self._todo.append((key, args))

    def inflight(self) -> int:
        return len(self._todo)

    def wait_one(self) -> list[tuple[str, dict]]:
        key, args = self._todo.pop()
        return [(key, evaluate_point(*args))]

    def close(self) -> None:
        pass


class _RayPool:
    """Ray tasks, one CPU each; `address='local'` starts a 2-CPU local cluster."""

    name = "ray"

    def __init__(self, address: str, workers: int):
        try:
            import ray
        except ImportError:
            raise SparsaError("--ray needs the `ray` package", hint="pip install 'ray[default]'") from None
        self.ray = ray
        self._started = False
        if not ray.is_initialized():
            # no network at run time: Ray otherwise reports usage statistics to usage-stats.ray.io
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            if address == "local":
                try:
                    ray.init(num_cpus=max(2, workers), **kw)
                except Exception as e:  # noqa: BLE001 - e.g. raylet start timeout on an overloaded host
                    raise SparsaError(f"Ray could not start a local cluster: {e}",
                                      hint="retry when the machine is less busy, or run without --ray") from None
            else:
                try:
                    ray.init(address=address, **kw)
                except Exception as e:  # noqa: BLE001 - surface as a user error
                    raise SparsaError(f"cannot connect to the Ray cluster at {address}: {e}",
                                      hint="start one with `ray start --head`, or use --ray local") from None
            self._started = True
        cpus = int(ray.cluster_resources().get("CPU", workers))
        self.workers = max(1, min(workers if address == "local" else cpus, cpus))
        self._task = ray.remote(num_cpus=1, max_retries=0)(evaluate_point)
        self._refs: dict = {}

    def capacity(self) -> int:
        return self.workers - len(self._refs)

    def submit(self, key: str, args: tuple) -> None:
        self._refs[self._task.remote(*args)] = key

    def inflight(self) -> int:
        return len(self._refs)

    def wait_one(self) -> list[tuple[str, dict]]:
        ready, _ = self.ray.wait(list(self._refs), num_returns=1)
        out = []
        for ref in ready:
            key = self._refs.pop(ref)
            try:
                out.append((key, self.ray.get(ref)))
            except Exception as e:  # noqa: BLE001 - worker died: record, go on
                out.append((key, {"status": "error", "metrics": {}, "result": None, "wall_s": None,
                                  "error": f"Ray task failed: {type(e).__name__}: {e}"}))
        return out

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()


# ---------------------------------------------------------------- the sweep


def prepare_points(loaded: LoadedRecipe, grid: Grid) -> list[dict[str, Any]]:
    """Expand and validate every point before any work starts (the size is refused before expanding)."""
    check_size(grid)
    points = expand(grid)
    if grid.mode == "optuna":
        # check each value (and range end) on its own: bad paths and out-of-range values fail now
        for path, spec in grid.params.items():
            vals = spec if isinstance(spec, list) else [spec.low, spec.high]
            for v in vals:
                v = int(v) if not isinstance(spec, list) and spec.int else v
                _validate_point(loaded, {path: v})
        return []
    for p in points:
        _validate_point(loaded, p)
    return points


def _validate_point(loaded: LoadedRecipe, overrides: dict) -> None:
    try:
        recipe_from_dict(loaded.raw, overrides=overrides, source=loaded.source, base_dir=loaded.base_dir)
    except SparsaError as e:
        raise SparsaError(f"sweep point {overrides} gives an invalid recipe:\n{e.message}", hint=e.hint) from None


def run_sweep(
    loaded: LoadedRecipe,
    grid: Grid,
    out_dir: str | os.PathLike,
    *,
    workers: int = 1,
    ray_address: str | None = None,
    on_point: Callable[[str, dict, dict], None] | None = None,
    report: bool = True,
    command: str | None = None,
) -> SweepSummary:
    t0 = time.perf_counter()
    if workers < 0:
        raise SparsaError(f"--workers {workers}: need 0 (in this process) or more")
    if workers == 0 and ray_address:
        raise SparsaError("--workers 0 runs points in this process; it cannot be combined with --ray")
    points = prepare_points(loaded, grid)
    store = SweepStore(out_dir)
    store.clean_stale_temp_files()  # left by a killed sweep; skipped while another sweep uses the store
    done = store.done_keys()
    objectives_checked = _check_objectives(grid, store.latest().values())
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    if workers == 0:
        threads = max(1, os.cpu_count() or 1)
    base = (loaded.raw, loaded.source, str(loaded.base_dir))

    pool = _RayPool(ray_address, workers) if ray_address else _ProcessPool(workers) if workers else _InlinePool()
    ran = errors = skipped = 0
    try:
        if grid.mode == "optuna":
            ran, errors, skipped, total = _run_optuna(loaded, grid, store, pool, base, threads, on_point,
                                                      objectives_checked)
        else:
            total = len(points)
            todo = []
            seen = set()
            for p in points:
                key = point_key(loaded.raw, p)
                if key in done or key in seen:
                    skipped += key in done
                    continue
                seen.add(key)
                todo.append((key, p))
            queue = list(reversed(todo))
            overrides_of = dict(todo)
            while queue or pool.inflight():
                while queue and pool.capacity() > 0:
                    key, p = queue.pop()
                    pool.submit(key, (*base, p, threads))
                for key, res in pool.wait_one():
                    _record(store, key, overrides_of[key], res, pool.name)
                    objectives_checked = objectives_checked or _check_objectives(grid, [res])
                    ran += 1
                    errors += res["status"] != "ok"
                    if on_point:
                        on_point(key, overrides_of[key], res)
    finally:
        pool.close()

    summary = SweepSummary(str(out_dir), total, skipped, ran, errors, pool.name, time.perf_counter() - t0,
                           objectives=[o.model_dump() for o in grid.objectives], command=command)
    rows = [r for r in store.latest().values() if r.get("status") == "ok"]
    if grid.objectives:
        from sparsa.dse.pareto import pareto_front

        summary.pareto = pareto_front(rows, grid.objectives)
    if report:
        from sparsa.report.sweep import write_sweep_report

        summary.report = str(write_sweep_report(store, grid, loaded, summary))
    store.release()
    return summary


def _record(store: SweepStore, key: str, overrides: dict, res: dict, backend: str) -> None:
    row = {
        "key": key,
        "overrides": overrides,
        "status": res["status"],
        "metrics": res.get("metrics") or {},
        "error": res.get("error"),
        "wall_s": res.get("wall_s"),
        "backend": backend,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    full = {"row": row, "result": res.get("result"), "traceback": res.get("traceback")}
    store.append(row, full)


def _check_objectives(grid: Grid, results) -> bool:
    """Refuse objectives that name no metric of the sweep's points (they would leave an empty front).
    Checked on the first successful point (metrics are known only once a point has run); True once checked."""
    ok = next((r for r in results if r.get("status") == "ok"), None)
    if ok is None or not grid.objectives:
        return ok is not None
    metrics = ok.get("metrics") or {}
    missing = [o.metric for o in grid.objectives if o.metric not in metrics]
    if missing:
        numeric = sorted(m for m, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
        shown = ", ".join(numeric[:40]) + (f" ({len(numeric) - 40} more)" if len(numeric) > 40 else "")
        raise SparsaError(f"objective metric(s) {', '.join(missing)} are not metrics of this sweep's points",
                          hint=f"name one of the metrics the points report: {shown}")
    return True


def _run_optuna(loaded, grid: Grid, store: SweepStore, pool, base, threads, on_point, objectives_checked=False):
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {}
    for path, spec in grid.params.items():
        if isinstance(spec, list):
            dists[path] = CategoricalDistribution(spec)
        elif spec.int:
            dists[path] = IntDistribution(int(spec.low), int(spec.high), log=spec.log)
        else:
            dists[path] = FloatDistribution(spec.low, spec.high, log=spec.log)
    directions = ["maximize" if o.goal == "max" else "minimize" for o in grid.objectives]
    sampler = (optuna.samplers.TPESampler(seed=grid.seed) if len(directions) == 1
               else optuna.samplers.NSGAIISampler(seed=grid.seed))
    study = optuna.create_study(directions=directions, sampler=sampler)

    def values(row):
        try:
            return [float(row["metrics"][o.metric]) for o in grid.objectives]
        except (KeyError, TypeError, ValueError):
            return None

    # replay the store: a resumed search continues from everything already measured
    stored = store.latest()
    skipped = 0
    for row in stored.values():
        ov = row.get("overrides", {})
        if set(ov) != set(dists):
            continue
        skipped += 1
        vals = values(row) if row.get("status") == "ok" else None
        state = optuna.trial.TrialState.COMPLETE if vals else optuna.trial.TrialState.FAIL
        study.add_trial(optuna.trial.create_trial(params=ov, distributions=dists, values=vals, state=state))

    ran = errors = 0
    trials: dict[str, list] = {}
    budget = grid.samples - skipped
    while budget > 0 or pool.inflight():
        while budget > 0 and pool.capacity() > 0:
            trial = study.ask(dists)
            ov = dict(trial.params)
            key = point_key(loaded.raw, ov)
            budget -= 1
            if key in stored or key in trials:  # the sampler proposed a point already measured
                row = stored.get(key)
                vals = values(row) if row and row.get("status") == "ok" else None
                study.tell(trial, vals, state=None if vals else optuna.trial.TrialState.FAIL)
                continue
            trials.setdefault(key, []).append(trial)
            pool.submit(key, (*base, ov, threads))
        if not pool.inflight():
            continue
        for key, res in pool.wait_one():
            tlist = trials.pop(key)
            ov = dict(tlist[0].params)
            _record(store, key, ov, res, f"{pool.name}+optuna")
            objectives_checked = objectives_checked or _check_objectives(grid, [res])
            stored[key] = {"status": res["status"], "metrics": res.get("metrics") or {}}
            ran += 1
            errors += res["status"] != "ok"
            vals = values(stored[key]) if res["status"] == "ok" else None
            for t in tlist:
                study.tell(t, vals, state=None if vals else optuna.trial.TrialState.FAIL)
            if on_point:
                on_point(key, ov, res)
    return ran, errors, skipped, grid.samples
