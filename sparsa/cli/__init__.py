"""`sparsa` command line. Each command group lives in its own module and registers on `app`."""

from __future__ import annotations

import sys

import sparsa.decompose  # noqa: F401  registers the PENNI / ESCALATE layer kinds a model folder may hold
from sparsa.cli.app import app, err_console
from sparsa.errors import SparsaError

# command modules: each one imports `app` from sparsa.cli.app and adds its commands on import
from sparsa.cli import (  # noqa: E402,F401  (in this order: the order of `sparsa --help`)
    model_cmds,  # info, prune, eval
    train_cmds,  # train (fixtures)
    quant_cmds,  # quantize
    decompose_cmds,  # decompose
    sim_cmds,  # sim
    rtl_cmds,  # rtl export|cosim|synth
    pipeline_cmds,  # run, sweep
)


def main() -> None:
    try:
        app()
    except SparsaError as e:
        err_console.print(f"[bold red]error:[/] {e.message}")
        if e.hint:
            err_console.print(f"[yellow]hint:[/] {e.hint}")
        sys.exit(2)
