"""Does an attention module's own forward still run once a head is gone?

Discovery trusts a module that stores its head width (`attention_head_size`), but a forward may still
take its output width from the input (PVT-v2: `.reshape(batch, seq, num_channels)` with
`num_channels = hidden_states.shape[-1]`), which breaks as soon as a head is removed. Reading the source
cannot tell; running it can: one forward of the model records each module's real arguments, then a
copy of each module with its last head removed runs on them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from sparsa.models.resize import set_submodule, sliced


@dataclass
class Candidate:
    name: str  # the attention module
    qkv: tuple[str, ...]  # its q/k/v Linears (paths in the model)
    o: str
    heads: int
    head_dim: int
    attrs: dict[str, str]  # head-count attribute -> "heads" | "all_head_size"


def removal_breaks(model: nn.Module, cands: list[Candidate], inputs: dict) -> dict[str, str]:
    """{attention module: why its forward fails with one head fewer}; modules that cannot be probed
    (the model's own forward fails, a projection outside the module) are left out."""
    cands = [c for c in cands if c.heads > 1 and all(p.startswith(c.name + ".") for p in c.qkv)]
    if not cands:
        return {}
    calls: dict[str, tuple] = {}
    hooks = [model.get_submodule(c.name).register_forward_pre_hook(
        (lambda n: lambda m, a, kw: calls.setdefault(n, (a, kw)))(c.name), with_kwargs=True) for c in cands]
    try:
        with torch.no_grad():
            model(**inputs)
    except Exception:  # noqa: BLE001 - the model's own failure is reported where it is run for real
        return {}
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for c in cands:
        if c.name not in calls:
            continue
        why = _run_without_a_head(model.get_submodule(c.name), c, *calls[c.name])
        if why:
            out[c.name] = why
    return out


def _stateless(values) -> list:
    """The recorded arguments with any key/value cache left out: the model's own forward has already
    written this layer's keys into it (XLM builds one even for an encoder pass), so running the module
    again on it would append a second, narrower set of keys and fail for that reason alone."""
    try:
        from transformers.cache_utils import Cache
    except ImportError:  # pragma: no cover - transformers is a dependency
        return list(values)
    return [None if isinstance(v, Cache) else v for v in values]


def _run_without_a_head(m: nn.Module, c: Candidate, args, kwargs) -> str:
    rels = [p[len(c.name) + 1:] for p in (*c.qkv, c.o) if p.startswith(c.name + ".")]
    if not all(type(m.get_submodule(r)) is nn.Linear for r in rels):
        return ""  # a technique's layer (QuantLinear) is not sliced here: left unprobed
    m2 = copy.deepcopy(m)
    keep = torch.arange((c.heads - 1) * c.head_dim)
    for p in c.qkv:
        rel = p[len(c.name) + 1:]
        set_submodule(m2, rel, sliced(m2.get_submodule(rel), out_idx=keep))
    if c.o.startswith(c.name + "."):
        rel = c.o[len(c.name) + 1:]
        set_submodule(m2, rel, sliced(m2.get_submodule(rel), in_idx=keep))
    for a, kind in c.attrs.items():
        setattr(m2, a, c.heads - 1 if kind == "heads" else (c.heads - 1) * c.head_dim)
    try:
        with torch.no_grad():
            m2(*_stateless(args), **dict(zip(kwargs, _stateless(kwargs.values()))))
    except Exception as e:  # noqa: BLE001 - any failure means the heads must stay
        msg = str(e).splitlines()[0][:120] if str(e) else ""
        return (f"{c.name} ({type(m).__name__}) fails with one head fewer ({type(e).__name__}: {msg}): its "
                "forward takes its width from the hidden size")
    return ""
