"""Layer kinds that techniques add to models, so that `sparsa.models` rebuilds them without importing
any technique.

A technique registers one builder per kind it saves (the `type` its layers' `sparsa_shape()` records):
the builder returns an empty module of the recorded shape, and the loader fills in its weights. The
PENNI / ESCALATE layers register when `sparsa.decompose` is imported.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from sparsa.errors import SparsaError

_BUILDERS: dict[str, Callable[[dict], nn.Module]] = {}


def register_layer_kind(kind: str, build: Callable[[dict], nn.Module]) -> None:
    """Let the loader rebuild layers recorded as `{"type": kind, ...}` with `build(shape)`."""
    _BUILDERS[kind] = build


def is_layer_kind(kind: str) -> bool:
    return kind in _BUILDERS


def build_layer(path: str, shape: dict) -> nn.Module:
    """An empty layer of the registered kind `shape["type"]`, at the recorded shape."""
    build = _BUILDERS.get(shape["type"])
    if build is None:
        raise SparsaError(
            f"{path}: the model folder holds a {shape['type']} layer, and no imported technique registered that kind",
            hint="import the technique that wrote it before loading (PENNI / ESCALATE layers: import sparsa.decompose)",
        )
    return build(shape)
