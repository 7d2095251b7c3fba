"""A progress bar (stderr) for a loop over batches that takes more than a few seconds.

Callers decide whether it shows (`sparsa.metrics.budget.wants_progress`), so a fixture's
sub-second loops print nothing and `--json` output on stdout is never touched."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator


@contextlib.contextmanager
def batch_progress(label: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n)`; shows `label` with done/total, elapsed and remaining time when enabled."""
    if not enabled or total <= 1:
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.errors import LiveError
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(TextColumn(f"  {label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), console=Console(stderr=True), transient=True)
    try:
        bar.start()
    except LiveError:  # another live display is running (an older rich cannot nest): plain lines instead
        console, done, step = Console(stderr=True), [0], max(1, total // 10)

        def line(n: int = 1) -> None:
            done[0] += n
            if done[0] % step == 0 or done[0] == total:
                console.print(f"  {label}: {done[0]}/{total}")

        yield line
        return
    task = bar.add_task(label, total=total)
    try:
        yield lambda n=1: bar.advance(task, n)
    finally:
        bar.stop()
