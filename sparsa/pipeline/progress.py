"""Rich progress for a pipeline run: one line per step, with its time."""

from __future__ import annotations

import contextlib
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


class _Timer:
    elapsed: float = 0.0  # wall seconds
    cpu: float = 0.0  # CPU seconds of this process (all threads): the figure a busy host does not inflate


def _peak_rss_mb() -> float:
    """The process's peak resident set so far (the kernel's ru_maxrss; KiB on Linux, bytes on macOS)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


class Steps:
    def __init__(self, plan: list[str], quiet: bool = False, console: Console | None = None):
        self.plan = plan
        self.quiet = quiet
        self.console = console or Console(stderr=True)
        self._progress = None
        self._task = None
        self.timings: dict[str, dict[str, float]] = {}

    def __enter__(self):
        if not self.quiet:
            self._progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(), console=self.console, transient=False)
            self._progress.__enter__()
            self._task = self._progress.add_task("sparsa run", total=len(self.plan))
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.__exit__(*exc)
        return False

    def note(self, message: str) -> None:
        """A line under the running step: how far a long step has got."""
        if self._progress is not None:
            self._progress.console.print(f"    [dim]{message}[/]", highlight=False)

    @contextlib.contextmanager
    def step(self, name: str):
        t = _Timer()
        if self._progress is not None:
            self._progress.update(self._task, description=name)
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield t
        finally:
            t.elapsed = time.perf_counter() - t0
            t.cpu = time.process_time() - c0
            self.timings[name] = {"wall_s": round(t.elapsed, 3), "cpu_s": round(t.cpu, 3),
                                  "peak_rss_mb": _peak_rss_mb()}
        if self._progress is not None:
            self._progress.console.print(f"  [green]✓[/] {name} [dim]({t.elapsed:.1f} s, cpu {t.cpu:.1f} s)[/]")
            self._progress.advance(self._task)
