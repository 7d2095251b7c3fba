"""`sparsa train NAME`: (re)train a fixture model (sparsa/fixtures/<name>); `--data DATA --out DIR`:
train a fixture's architecture on any labelled image folder or built-in set."""

from __future__ import annotations

from pathlib import Path

import typer

from sparsa.cli import checks
from sparsa.cli.app import app, emit, status_console
from sparsa.errors import SparsaError

FIXTURE_NAMES = ("tiny-vit", "tiny-swin", "mnist-swin", "tiny-videomae", "tiny-cnn")


@app.command()
def train(
    name: str = typer.Argument(None, help="fixture to train: tiny-vit, tiny-swin, mnist-swin, tiny-videomae, tiny-cnn, "
                                          "or all (default with --data: tiny-swin, or tiny-videomae for clips)"),
    data: str = typer.Option(None, "--data", help="train the fixture's architecture on this labelled set instead: "
                                                  "a built-in name (digits, mnist, clips) or an image folder "
                                                  "(class_name/*.png); needs --out"),
    out: Path = typer.Option(None, "--out", help="output folder (default: sparsa/fixtures/<name>, replacing it)"),
    epochs: int = typer.Option(None, "--epochs", callback=checks.in_range(1, 100_000, hint="omit --epochs for the fixture's own count"), help="override the recipe's epoch count"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out folder (else refused)"),
    json_: bool = typer.Option(False, "--json", help="print one JSON object"),
):
    """Train a fixture model from scratch on its offline data set, or on --data (deterministic, seed 0)."""
    if name is None:
        if data is None:
            raise SparsaError("name a fixture to train, or a data set to train one on",
                              hint=f"sparsa train {{{','.join(FIXTURE_NAMES)},all}}, or sparsa train --data DATA --out DIR")
        name = "tiny-videomae" if data == "clips" else "tiny-swin"
    names = list(FIXTURE_NAMES) if name == "all" else [name]
    if any(n not in FIXTURE_NAMES for n in names):
        raise SparsaError(f"unknown fixture {name!r}", hint=f"choose one of {', '.join(FIXTURE_NAMES)} or all")
    if out is not None and len(names) > 1:
        raise SparsaError("--out takes one fixture", hint="train one fixture at a time with --out")
    if data is not None:
        if len(names) > 1 or name == "tiny-cnn":
            raise SparsaError(f"--data trains one Hugging Face fixture, not {name}",
                              hint="name one of tiny-vit, tiny-swin, mnist-swin, tiny-videomae with --data")
        if out is None:
            raise SparsaError(f"training on --data {data} needs an output folder",
                              hint=f"pass --out DIR (sparsa/fixtures/{name} keeps the committed model)")
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

            results[n] = train_fixture(n, out, epochs, log=lambda m: con.print(m), data=data)
    if len(names) == 1:
        emit(results[names[0]], json_)
    else:
        emit({n: r.get("test_accuracy") for n, r in results.items()}, json_)
