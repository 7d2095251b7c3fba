"""`sparsa` command line. Each command group lives in its own module and registers on `app`."""

from __future__ import annotations

import gc
import sys

import sparsa.decompose  # noqa: F401  registers the PENNI / ESCALATE layer kinds a model folder may hold
import sparsa.quant  # noqa: F401  registers the integer-quantized layer kind (QuantLinear)
from sparsa.cli import crash
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
        _print_error(e.message, e.hint)
        sys.exit(2)
    except Exception as e:  # noqa: BLE001 - the last resort: a message, not a traceback (crash.py)
        if crash.wants_traceback():
            raise
        _print_error(*crash.describe(e))
        sys.exit(crash.EXIT_UNEXPECTED)
    finally:
        # The interpreter's last garbage collection walks every object torch and transformers made
        # (~1 s after a full-size model, longer than some commands' work); the command is done and
        # its files are closed, and the OS takes the memory back at exit anyway.
        gc.freeze()


def _print_error(message: str, hint: str | None) -> None:
    # markup=False: a message quoting user input ("[red]", a YAML list) is printed as written
    err_console.print("[bold red]error:[/] ", end="")
    err_console.print(_capped(message), markup=False, highlight=False)
    if hint:
        err_console.print("[yellow]hint:[/] ", end="")
        err_console.print(_capped(hint), markup=False, highlight=False)


MAX_MESSAGE_CHARS = 2000  # an error quoting a huge input must still print in an instant


def _capped(text: str) -> str:
    text = str(text)
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    return text[:MAX_MESSAGE_CHARS] + f"… ({len(text) - MAX_MESSAGE_CHARS} more characters)"
