"""A pipeline step records its peak memory beside its times, and long steps can print progress notes."""

from __future__ import annotations

import io

from rich.console import Console

from sparsa.pipeline.progress import Steps


def test_steps_record_peak_rss_and_print_notes_under_the_running_step():
    buf = io.StringIO()
    with Steps(["stage prune"], console=Console(file=buf, width=120)) as steps:
        with steps.step("stage prune"):
            block = bytearray(64 << 20)  # touch 64 MiB: the recorded peak is at least that
            block[::4096] = b"\1" * len(block[::4096])
            steps.note("refit 1/24 layer.0: relative error 0.5000 -> 0.1000")
    t = steps.timings["stage prune"]
    assert t["peak_rss_mb"] >= 64 and t["wall_s"] >= 0 and t["cpu_s"] >= 0
    assert "refit 1/24 layer.0" in buf.getvalue()


def test_quiet_steps_print_no_notes():
    buf = io.StringIO()
    with Steps(["x"], quiet=True, console=Console(file=buf)) as steps:
        with steps.step("x"):
            steps.note("hidden")
    assert buf.getvalue() == ""
