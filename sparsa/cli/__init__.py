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
        # markup=False: a message quoting user input ("[red]", a YAML list) is printed as written
        err_console.print("[bold red]error:[/] ", end="")
        err_console.print(_capped(e.message), markup=False, highlight=False)
        if e.hint:
            err_console.print("[yellow]hint:[/] ", end="")
            err_console.print(_capped(e.hint), markup=False, highlight=False)
        sys.exit(2)


MAX_MESSAGE_CHARS = 2000  # an error quoting a huge input must still print in an instant


def _capped(text: str) -> str:
    text = str(text)
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    return text[:MAX_MESSAGE_CHARS] + f"… ({len(text) - MAX_MESSAGE_CHARS} more characters)"
