"""The Typer app every command module registers on, and the output helpers they share."""

from __future__ import annotations

import json
import math
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
    clean, nonfinite = finite_json_values(result)
    if nonfinite:  # a NaN metric is news the user must see, in either output mode
        err_console.print(f"[yellow]warning:[/] not finite (NaN or infinite): {', '.join(nonfinite)}")
    if as_json:
        if nonfinite:
            clean["nonfinite"] = nonfinite
        # allow_nan=False: bare NaN / Infinity are not JSON; every reader of --json must be able to parse it
        sys.stdout.write(json.dumps(clean, allow_nan=False) + "\n")
        return
    if table is None:
        table = Table(title=title, show_header=True)
        table.add_column("field")
        table.add_column("value")
        for k, v in result.items():
            table.add_row(str(k), _fmt(v))
    console.print(table)


def finite_json_values(result: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """`result` as plain JSON values with NaN/inf replaced by None, and the keys where that happened."""
    from sparsa.io import _json_default

    def default(o: Any) -> Any:
        try:
            return _json_default(o)
        except TypeError:  # an object JSON has no form for: its text, rather than no output at all
            return str(o)

    plain = json.loads(json.dumps(result, default=default))  # numpy/torch scalars -> Python floats
    bad: list[str] = []
    return _finite(plain, "", bad), bad


def _finite(v: Any, path: str, bad: list[str]) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        bad.append(path or "(value)")
        return None
    if isinstance(v, dict):
        return {k: _finite(x, f"{path}.{k}" if path else str(k), bad) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x, f"{path}[{i}]", bad) for i, x in enumerate(v)]
    return v


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
