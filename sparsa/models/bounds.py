"""Size checks before a model is built: a config or sparsa.json may declare a model no machine holds.

A config with `depths: [1000000000, 2]` or a sparsa.json shape of 10^8 channels would otherwise be
found out only when the allocation fails, after minutes of swapping. So the loader first builds a
skeleton on PyTorch's `meta` device (shapes without storage), counts its bytes, and refuses a model
that would not fit in memory, stating the estimate. Layer counts are checked on the raw config
first: some constructors loop over them before creating a single parameter.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable

import torch
from torch import nn

from sparsa.errors import SparsaError

# the loader holds the weights twice for a moment (the file's tensors and the model's)
LOAD_COPIES = 2
MEMORY_FRACTION = 0.8  # of physical memory: the rest is the OS's and the data's
MAX_LAYERS = 10_000  # per config field; the deepest real encoders have a few hundred
MAX_MODULES = 200_000  # a skeleton past this many submodules is refused while it is being built
# config.json fields that count layers (sum of a list: Swin's per-stage `depths`)
LAYER_FIELDS = ("num_hidden_layers", "num_layers", "n_layers", "depths", "encoder_layers", "decoder_layers",
                "num_blocks", "num_stages")


def machine_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume a modest machine
        return 16 << 30


def memory_budget_bytes() -> int:
    return int(machine_memory_bytes() * MEMORY_FRACTION)


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB"


def check_layer_counts(cfg: dict, source: str) -> None:
    """Refuse layer counts that are not small non-negative integers, before any constructor loops over them."""
    for key in LAYER_FIELDS:
        if key not in cfg or cfg[key] is None:
            continue
        v = cfg[key]
        items = v if isinstance(v, list) else [v]
        if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in items):
            raise SparsaError(f"{source}: {key} must be a non-negative integer (or a list of them), got {v!r}",
                              hint="fix or re-create the model's config.json")
        total = sum(items)
        if total > MAX_LAYERS or len(items) > MAX_LAYERS:
            raise SparsaError(f"{source}: {key} declares {total} layers; sparsa builds models of up to {MAX_LAYERS}",
                              hint="the config is corrupt or not meant for this machine")


@contextmanager
def _registration_budget(source: str, max_bytes: int):
    """Abort a skeleton's construction as soon as it passes MAX_MODULES submodules or `max_bytes`."""
    from torch.nn.modules import module as M

    count = {"modules": 0, "bytes": 0}

    def on_module(_parent, _name, _sub):
        count["modules"] += 1
        if count["modules"] > MAX_MODULES:
            raise SparsaError(f"{source} declares a model of more than {MAX_MODULES} modules",
                              hint="the model description is corrupt or not meant for this machine")

    def on_tensor(_module, _name, t):
        if t is not None:
            count["bytes"] += t.numel() * t.element_size()
            if count["bytes"] > max_bytes:
                raise SparsaError(f"{source} declares a model of more than {_gb(count['bytes'])}; this machine "
                                  f"can hold about {_gb(memory_budget_bytes())}",
                                  hint="the model description is corrupt, or load it on a machine with more memory")

    handles = [M.register_module_module_registration_hook(on_module),
               M.register_module_parameter_registration_hook(on_tensor),
               M.register_module_buffer_registration_hook(on_tensor)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def build_skeleton(build: Callable[[], nn.Module], source: str) -> nn.Module:
    """`build()` on the meta device: the model's structure and sizes, no memory for its tensors."""
    # counts every tensor ever registered: the real build holds the original model before shrinking it
    with _registration_budget(source, memory_budget_bytes()), torch.device("meta"):
        return build()


def model_bytes(model: nn.Module) -> int:
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def check_fits(skeleton: nn.Module, source: str) -> int:
    """Refuse a model whose loading needs more than the machine's memory budget; returns its bytes."""
    size = model_bytes(skeleton)
    need, budget = LOAD_COPIES * size, memory_budget_bytes()
    if need > budget:
        raise SparsaError(f"{source} describes a model of {_gb(size)} (loading it needs about {_gb(need)}); "
                          f"this machine can hold about {_gb(budget)} "
                          f"({MEMORY_FRACTION:.0%} of {_gb(machine_memory_bytes())} of memory)",
                          hint="the model description is corrupt, or load it on a machine with more memory")
    return size
