"""Range checks for numeric options, as typer callbacks: NaN, infinity, negatives and zero where they mean
nothing are refused with the option's name, before any model is loaded."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import typer

from sparsa.errors import SparsaError


def in_range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
             hint: str | None = None) -> Callable:
    """A callback refusing values outside [lo, hi] (an open end excludes the bound) and non-finite ones."""

    def check(param: typer.CallbackParam, value):
        if value is None:
            return value
        name = max(param.opts, key=len) if param.opts else param.name
        if isinstance(value, float) and not math.isfinite(value):
            raise SparsaError(f"{name} {value} is not a finite number", hint=hint or f"give {name} {_range(lo, hi, lo_open, hi_open)}")
        low_bad = lo is not None and (value <= lo if lo_open else value < lo)
        high_bad = hi is not None and (value >= hi if hi_open else value > hi)
        if low_bad or high_bad:
            raise SparsaError(f"{name} {value} is out of range: it must be {_range(lo, hi, lo_open, hi_open)}",
                              hint=hint or f"give {name} {_range(lo, hi, lo_open, hi_open)}")
        return value

    return check


def _range(lo, hi, lo_open, hi_open) -> str:
    if hi is None:
        return f"{'greater than' if lo_open else 'at least'} {lo}"
    if lo is None:
        return f"{'less than' if hi_open else 'at most'} {hi}"
    return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


positive = in_range(1)  # counts: runs, threads, samples, sequence lengths
non_negative = in_range(0)  # epochs, weights of penalties
fraction = in_range(0, 1, hi_open=True)
seed = in_range(0, 2**32 - 1)


# what a folder holds, by the layer kinds techniques add (their `sparsa_shape()["type"]`)
_KIND_WORDS = {"QuantLinear": "integer-quantized", "Int8Layer": "hybrid-quantized (ESCALATE)",
               "EscalateConv": "hybrid-quantized (ESCALATE)", "PenniConv": "PENNI-decomposed",
               "PenniLinear": "PENNI-decomposed"}


def technique_layers(lm) -> dict[str, int]:
    """Layer kind -> count of the layers a technique put into the model (quantized, decomposed, ...)."""
    counts: dict[str, int] = {}
    for _, m in lm.model.named_modules():
        if callable(getattr(m, "sparsa_shape", None)):
            kind = m.sparsa_shape()["type"]
            counts[kind] = counts.get(kind, 0) + 1
    return counts


QUANTIZED_KINDS = ("QuantLinear", "Int8Layer", "EscalateConv")


def require_float_layers(lm, name: str, command: str, hint: str, refused: tuple[str, ...] | None = None) -> None:
    """Refuse, naming what the folder holds, a model whose layers `command` cannot work on (chaining
    commands in a wrong order: quantizing a quantized model, pruning a decomposed one). `refused`:
    the layer kinds refused (default: every kind a technique adds)."""
    kinds = {k: n for k, n in technique_layers(lm).items() if refused is None or k in refused}
    if kinds:
        what = ", ".join(sorted({_KIND_WORDS.get(k, k) for k in kinds}))
        layers = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        raise SparsaError(f"{name} holds a {what} model ({layers} layers); {command} needs a model with float "
                          "Linear/Conv layers", hint=hint)


def out_apart_from_model(out, model: str) -> None:
    """--out may not be the model folder the command reads, nor a folder holding it: writing the result
    there (with --overwrite) would delete the model, and everything beside it, before the user could
    compare the two. A built-in name (no such folder) is no folder to protect."""
    src = Path(model)
    if out is None or not src.is_dir():
        return
    o, m = Path(out).resolve(), src.resolve()
    if o == m or o in m.parents:
        what = "is" if o == m else "holds"
        raise SparsaError(f"--out {out} {what} the model folder {model} this command reads: writing there would "
                          "delete the model", hint=f"write to a folder of its own, e.g. --out {m.name}-out")
