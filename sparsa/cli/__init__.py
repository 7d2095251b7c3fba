"""`sparsa` command line. Each command group lives in its own module and registers on `app`."""

from __future__ import annotations

import importlib
import sys

from sparsa.cli.app import app, err_console
from sparsa.errors import SparsaError

# command modules; each one imports `app` from sparsa.cli.app and adds its commands
_COMMAND_MODULES = [
    "sparsa.cli.model_cmds",  # info, prune, eval
    "sparsa.cli.train_cmds",  # train (fixtures)
    "sparsa.cli.quant_cmds",  # quantize
    "sparsa.cli.decompose_cmds",  # decompose
    "sparsa.cli.sim_cmds",  # sim
    "sparsa.cli.rtl_cmds",  # rtl export|cosim|synth
    "sparsa.cli.pipeline_cmds",  # run, sweep
]

for _name in _COMMAND_MODULES:
    try:
        importlib.import_module(_name)
    except ModuleNotFoundError as e:  # a command group not present in this build
        if e.name != _name:
            raise


def main() -> None:
    try:
        app()
    except SparsaError as e:
        err_console.print(f"[bold red]error:[/] {e.message}")
        if e.hint:
            err_console.print(f"[yellow]hint:[/] {e.hint}")
        sys.exit(2)
