"""The `conv` family: any plain nn.Module (no Hugging Face config).

Channels come from torch.fx dependency analysis (`graph.analyse_channels`); heads and FFN
neurons from sparsa's own transformer pieces (`zoo.MultiHeadSelfAttention`, `zoo.FeedForward`)
wherever they appear. The model must say its per-sample `input_shape` (attribute), so sparsa
can make example inputs and trace it.
"""

from __future__ import annotations

import copy
import inspect

import torch
from torch import nn

from sparsa.errors import SparsaError
from sparsa.models.families import FamilyAdapter, register_family
from sparsa.models.graph import analyse_channels
from sparsa.models.resize import module_shape
from sparsa.models.units import ChannelGroup, FFNGroup, HeadGroup
from sparsa.models.zoo import FeedForward, MultiHeadSelfAttention


_CACHE: dict = {}


class ConvAdapter(FamilyAdapter):
    def __init__(self, model: nn.Module, config=None):
        super().__init__(model, config)
        self.modality = getattr(model, "modality", "image")

    def head_groups(self) -> list[HeadGroup]:
        return [
            HeadGroup(
                name=n, q=f"{n}.q_proj", k=f"{n}.k_proj", v=f"{n}.v_proj", o=f"{n}.o_proj",
                num_heads=m.num_heads, head_dim=m.head_dim, attrs={"num_heads": "heads"},
            )
            for n, m in self.model.named_modules()
            if isinstance(m, MultiHeadSelfAttention)
        ]

    def ffn_groups(self) -> list[FFNGroup]:
        return [
            FFNGroup(name=n, fc1=f"{n}.fc1", fc2=f"{n}.fc2", size=m.fc1.out_features)
            for n, m in self.model.named_modules()
            if isinstance(m, FeedForward)
        ]

    def channel_groups(self) -> list[ChannelGroup]:
        # the analysis depends only on the class and the module shapes: cache it on those
        key = (type(self.model), tuple((n, str(module_shape(m))) for n, m in self.model.named_modules()))
        if key not in _CACHE:
            if len(_CACHE) > 64:
                _CACHE.clear()
            _CACHE[key] = self._analyse()
        return copy.deepcopy(_CACHE[key])

    def _analyse(self) -> list[ChannelGroup]:
        try:
            return analyse_channels(self.model, self.example_inputs(batch=1))
        except SparsaError:
            raise
        except Exception as e:  # symbolic tracing fails on data-dependent control flow
            raise SparsaError(
                f"cannot trace {type(self.model).__name__} with torch.fx to find channel dependencies: {e}",
                hint="keep forward() free of data-dependent Python control flow, or register the "
                "untraceable sub-module with sparsa.models.graph.register_opaque_module",
            ) from e

    def input_name(self) -> str:
        params = [p for p in inspect.signature(self.model.forward).parameters.values() if p.name != "self"]
        return params[0].name if params else "x"

    def example_inputs(self, batch: int = 1, seq_len: int | None = None) -> dict:
        shape = getattr(self.model, "input_shape", None)
        if shape is None:
            raise SparsaError(
                f"{type(self.model).__name__} has no `input_shape` attribute",
                hint="set model.input_shape = (C, H, W) (per sample, without the batch) on your module",
            )
        g = torch.Generator().manual_seed(0)
        return {self.input_name(): torch.randn(batch, *shape, generator=g)}


def _is_plain_module(m: nn.Module) -> bool:
    return getattr(m, "config", None) is None or not hasattr(getattr(m, "config"), "model_type")


register_family("conv", ConvAdapter, detect=_is_plain_module,
                notes="plain nn.Module conv nets (Conv1d/2d/3d, BatchNorm, Linear, residual adds, concatenations)")
