"""Layer kinds that techniques add to models, so that `sparsa.models` rebuilds them without importing
any technique.

A technique registers one builder per kind it saves (the `type` its layers' `sparsa_shape()` records):
the builder returns an empty module of the recorded shape, and the loader fills in its weights. A kind
whose stored tensors are not its state dict (integer codes packed below a byte) also registers `pack`
(module -> the tensors to store, named relative to the module) and `unpack` (fills the module from
them). The PENNI / ESCALATE layers register when `sparsa.decompose` is imported, the integer-quantized
`QuantLinear` when `sparsa.quant` is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from sparsa.errors import SparsaError


@dataclass(frozen=True)
class LayerKind:
    build: Callable[[dict], nn.Module]
    pack: Callable[[nn.Module], dict[str, torch.Tensor]] | None = None
    unpack: Callable[[nn.Module, dict[str, torch.Tensor], str], None] | None = None


_KINDS: dict[str, LayerKind] = {}


def register_layer_kind(kind: str, build: Callable[[dict], nn.Module], *,
                        pack: Callable[[nn.Module], dict[str, torch.Tensor]] | None = None,
                        unpack: Callable[[nn.Module, dict[str, torch.Tensor], str], None] | None = None) -> None:
    """Let the loader rebuild layers recorded as `{"type": kind, ...}` with `build(shape)`; with
    `pack` / `unpack(module, tensors, where)` the layer's tensors are stored in its own encoding."""
    _KINDS[kind] = LayerKind(build, pack, unpack)


def is_layer_kind(kind: str) -> bool:
    return kind in _KINDS


def packed_kind(kind: str) -> LayerKind | None:
    """The registered kind if it stores its tensors in its own encoding, else None."""
    k = _KINDS.get(kind)
    return k if k is not None and k.pack is not None else None


def build_layer(path: str, shape: dict) -> nn.Module:
    """An empty layer of the registered kind `shape["type"]`, at the recorded shape."""
    kind = _KINDS.get(shape["type"])
    if kind is None:
        raise SparsaError(
            f"{path}: the model folder holds a {shape['type']} layer, and no imported technique registered that kind",
            hint="load it with sparsa.load(path), which registers every technique's layers (or import the "
                 "technique first: PENNI / ESCALATE layers: sparsa.decompose; QuantLinear: sparsa.quant)",
        )
    return kind.build(shape)
