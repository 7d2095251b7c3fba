"""`sparsa train NAME`: (re)train a fixture model (sparsa/fixtures/<name>)."""

from __future__ import annotations

from pathlib import Path

import typer

from sparsa.cli import checks
from sparsa.cli.app import app, emit, status_console
from sparsa.errors import SparsaError

FIXTURE_NAMES = ("tiny-vit", "tiny-swin", "tiny-videomae", "tiny-cnn")


@app.command()
def train(
    name: str = typer.Argument(..., help="fixture to train: tiny-vit, tiny-swin, tiny-videomae, tiny-cnn, or all"),
    out: Path = typer.Option(None, "--out", help="output folder (default: sparsa/fixtures/<name>, replacing it)"),
    epochs: int = typer.Option(None, "--epochs", callback=checks.in_range(1, 100_000, hint="omit --epochs for the fixture's own count"), help="override the recipe's epoch count"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out folder (else refused)"),
    json_: bool = typer.Option(False, "--json", help="print one JSON object"),
):
    """Train a fixture model from scratch on its offline data set (deterministic, seed 0)."""
    names = list(FIXTURE_NAMES) if name == "all" else [name]
    if any(n not in FIXTURE_NAMES for n in names):
        raise SparsaError(f"unknown fixture {name!r}", hint=f"choose one of {', '.join(FIXTURE_NAMES)} or all")
    if out is not None and len(names) > 1:
        raise SparsaError("--out takes one fixture", hint="train one fixture at a time with --out")
    if out is not None:
        from sparsa.io import check_out_dir

        check_out_dir(out, overwrite=overwrite)  # the default (the fixture's own folder) is replaced by design
    con = status_console(json_)
    results = {}
    for n in names:
        if n == "tiny-cnn":
            from sparsa.fixtures import train_cnn

            kw = {"out": out} if out is not None else {}
            if epochs is not None:
                kw["epochs"] = epochs
            results[n] = train_cnn.train(**kw)
        else:
            from sparsa.fixtures.train import train as train_fixture

            results[n] = train_fixture(n, out, epochs, log=lambda m: con.print(m))
    if len(names) == 1:
        emit(results[names[0]], json_)
    else:
        emit({n: r.get("test_accuracy") for n, r in results.items()}, json_)
