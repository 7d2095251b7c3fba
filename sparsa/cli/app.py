"""The Typer app every command module registers on, and the output helpers they share."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="sparsa",
    help="Compress transformer models and measure what they cost: on real CPUs and on a simulated sparse accelerator.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



@app.callback()
def _root() -> None:
    """sparsa: compress transformer models and measure what they cost."""


# human-readable output goes to stderr when --json is given, so stdout stays one JSON object
console = Console(stderr=False)
err_console = Console(stderr=True)


def emit(result: dict[str, Any], as_json: bool, table: Table | None = None, title: str | None = None) -> None:
    """Print `result` as one JSON object (--json) or as a rich table."""
    if as_json:
        from sparsa.io import _json_default

        sys.stdout.write(json.dumps(result, default=_json_default) + "\n")
        return
    if table is None:
        table = Table(title=title, show_header=True)
        table.add_column("field")
        table.add_column("value")
        for k, v in result.items():
            table.add_row(str(k), _fmt(v))
    console.print(table)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)) and len(v) > 16:
        return f"[{', '.join(map(str, v[:16]))}, …] ({len(v)} items)"
    return str(v)


def status_console(as_json: bool) -> Console:
    """Where progress/info should go: stderr under --json, stdout otherwise."""
    return err_console if as_json else console


@app.command()
def version(json_: bool = typer.Option(False, "--json", help="print one JSON object")) -> None:
    """Print sparsa's version and the versions of the libraries it runs on."""
    import platform

    import sparsa

    out = {"sparsa": sparsa.__version__, "python": platform.python_version()}
    for mod in ("torch", "transformers", "onnxruntime", "amaranth"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # not installed: say so rather than fail
            out[mod] = None
    emit(out, json_)
