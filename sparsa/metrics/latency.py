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
    q = statistics.quantiles(times, n=10) if len(times) >= 2 else [times[0]] * 9
    return {
        "median_ms": statistics.median(times),
        "p10_ms": q[0],
        "p90_ms": q[-1],
        "mean_ms": statistics.fmean(times),
        "runs": runs,
        "threads": threads if threads is not None else old,
    }
