"""Wall-clock latency: warm-up, then the median and spread of many timed runs at a fixed thread count."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def measure_latency(fn: Callable[[], object], warmup: int = 5, runs: int = 30, threads: int | None = None) -> dict:
    """Time `fn()`; returns {"median_ms", "p10_ms", "p90_ms", "mean_ms", "runs", "threads"}.

    `threads` fixes torch's intra-op thread count for the measurement (restored afterwards).
    On shared machines compare ratios measured in the same process, not absolute numbers.
    """
    if runs < 1 or warmup < 0:
        from sparsa.errors import SparsaError

        raise SparsaError(f"runs={runs}, warmup={warmup}: need runs >= 1 and warmup >= 0")
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                fn()
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
    finally:
        torch.set_num_threads(old)
    return _summary(times, threads if threads is not None else old)


def _summary(times: list[float], threads: int) -> dict:
    # inclusive: within the measured range (the default extrapolates: with 3 runs p10 fell below zero)
    q = statistics.quantiles(times, n=10, method="inclusive") if len(times) >= 2 else [times[0]] * 9
    return {
        "median_ms": statistics.median(times),
        "p10_ms": q[0],
        "p90_ms": q[-1],
        "mean_ms": statistics.fmean(times),
        "min_ms": min(times),
        "runs": len(times),
        "threads": threads,
    }


def measure_latency_pair(fn_a: Callable[[], object], fn_b: Callable[[], object], warmup: int = 5, runs: int = 30,
                         threads: int | None = None) -> tuple[dict, dict]:
    """Time two functions alternately (a, b, a, b, ...) so that load changes hit both alike.

    Returns the two summaries of `measure_latency`; the first also carries `paired_ratio_median`,
    the median of the per-pair wall-time ratios a_i / b_i (each pair ran back to back: the most
    robust wall-clock ratio on a shared machine), and `paired_cpu_ratio_median`, the same for
    process CPU time (which leaves out time spent waiting for a core), and `best_ratio`, min(a) / min(b).
    Both carry `cpu_median_ms`."""
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    ta, tb, ca, cb = [], [], [], []
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                fn_a()
                fn_b()
            for _ in range(runs):
                for fn, ts, cs in ((fn_a, ta, ca), (fn_b, tb, cb)):
                    c0, t0 = time.process_time(), time.perf_counter()
                    fn()
                    ts.append((time.perf_counter() - t0) * 1e3)
                    cs.append((time.process_time() - c0) * 1e3)
    finally:
        torch.set_num_threads(old)
    th = threads if threads is not None else old
    sa, sb = _summary(ta, th), _summary(tb, th)
    sa["paired_ratio_median"] = statistics.median(a / b for a, b in zip(ta, tb))
    # best-of-N per side (timeit's advice): interference only ever adds time, so the minima are the
    # least disturbed estimate of each side's own cost on a machine that is never fully quiet
    sa["best_ratio"] = min(ta) / max(min(tb), 1e-9)
    # CPU time excludes time spent waiting for a core: on a loaded machine it tracks the work done
    sa["cpu_median_ms"], sb["cpu_median_ms"] = statistics.median(ca), statistics.median(cb)
    sa["paired_cpu_ratio_median"] = statistics.median(a / max(b, 1e-9) for a, b in zip(ca, cb))
    return sa, sb


def measure_latency_blocks(fns: dict[str, Callable[[], object]], rounds: int = 4, warmup: int = 3, runs: int = 15,
                           pause: float = 0.3) -> dict[str, list[float]]:
    """Wall times (ms) of each fn, measured in blocks: pause (idle pool threads park), `warmup`
    calls, then `runs` timed calls back to back; the blocks cycle over the fns `rounds` times so a
    slow phase of the machine hits every fn. For ONNX Runtime sessions, where call-by-call
    interleaving fails: spinning pool threads steal the cores from the next session's call, and
    without spinning ORT pays a thread wake-up on every op (28.0 vs 18.9 ms for one model)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            time.sleep(pause)
            for _ in range(warmup):
                f()
            for _ in range(runs):
                t0 = time.perf_counter()
                f()
                times[k].append((time.perf_counter() - t0) * 1e3)
    return times

