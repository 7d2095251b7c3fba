"""Channel dependency analysis for plain nn.Module conv nets, with torch.fx.

Every Conv/Linear output starts a channel *space*. Walking the traced graph, a tensor carries
the list of spaces along its channel axis (several after a concatenation), the axis index,
and how many flattened columns each channel owns (h*w after a channel-major flatten). Tensors
added together join their spaces into one coupled group (residual adds); BatchNorm and
depthwise convs become per-channel members; Conv/Linear readers become consumers.

Anything the walk does not understand blocks the spaces it touches (never pruned), as do
the model's outputs (docs/algorithms.md §2.3 rule 7). Opaque sub-modules (e.g. a transformer
block, whose residual width is never pruned, rule 6) are traced as leaves and block their
inputs the same way.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from sparsa.models.units import ChannelGroup, Consumer

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# modules that act on each channel independently and keep the channel axis where it is
_PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.Hardswish, nn.Hardsigmoid,
    nn.ELU, nn.Softplus, nn.Mish, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)
_PASS_FUNCS = {
    torch.relu, torch.sigmoid, torch.tanh, nn.functional.relu, nn.functional.gelu, nn.functional.silu,
    nn.functional.relu6, nn.functional.leaky_relu, nn.functional.hardswish, nn.functional.dropout,
    nn.functional.max_pool1d, nn.functional.max_pool2d, nn.functional.max_pool3d,
    nn.functional.avg_pool1d, nn.functional.avg_pool2d, nn.functional.avg_pool3d,
    nn.functional.adaptive_avg_pool1d, nn.functional.adaptive_avg_pool2d, nn.functional.adaptive_avg_pool3d,
    nn.functional.adaptive_max_pool2d, nn.functional.sigmoid, nn.functional.tanh,
}
_PASS_METHODS = {"relu", "sigmoid", "tanh", "contiguous", "clone", "float", "to", "detach", "relu_"}
_BINARY = {operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, torch.add, torch.sub, torch.mul}
_BINARY_METHODS = {"add", "sub", "mul", "div", "add_", "mul_"}

# module classes traced as opaque leaves (register yours with `register_opaque_module`)
OPAQUE_MODULES: list[type] = []


def register_opaque_module(cls: type) -> type:
    """Trace `cls` as a leaf whose inputs are never pruned (e.g. a transformer block)."""
    OPAQUE_MODULES.append(cls)
    return cls


@dataclass
class _Space:
    segments: list[tuple[int, int]]  # (group id, channels)
    dim: int
    stride: int = 1


_OPAQUE = object()  # a tensor whose channel axis carries no known space


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, tuple(OPAQUE_MODULES)) or super().is_leaf_module(m, qualname)


class _Groups:
    def __init__(self):
        self.parent: list[int] = []
        self.size: list[int] = []
        self.blocked: list[bool] = []
        self.producers: list[list[str]] = []
        self.per_channel: list[list[Consumer]] = []
        self.consumers: list[list[Consumer]] = []

    def new(self, size: int, producer: str | None = None, blocked: bool = False) -> int:
        g = len(self.parent)
        self.parent.append(g)
        self.size.append(size)
        self.blocked.append(blocked)
        self.producers.append([producer] if producer else [])
        self.per_channel.append([])
        self.consumers.append([])
        return g

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        if self.size[a] != self.size[b]:  # shapes that broadcast but do not match: do not prune
            self.blocked[a] = self.blocked[b] = True
        self.parent[b] = a
        self.blocked[a] = self.blocked[a] or self.blocked[b]
        self.producers[a] += self.producers[b]
        self.per_channel[a] += self.per_channel[b]
        self.consumers[a] += self.consumers[b]

    def block(self, space) -> None:
        if isinstance(space, _Space):
            for g, _ in space.segments:
                self.blocked[self.find(g)] = True


def _shape(node) -> tuple | None:
    tm = node.meta.get("tensor_meta")
    return tuple(tm.shape) if tm is not None and hasattr(tm, "shape") else None


def analyse_channels(model: nn.Module, example_inputs: dict) -> list[ChannelGroup]:
    """The prunable channel groups of `model` (producer rows + BN entries + consumer columns)."""
    gm = fx.GraphModule(model, _Tracer().trace(model))
    order = [n.target for n in gm.graph.nodes if n.op == "placeholder"]
    args = [example_inputs[k] for k in order if k in example_inputs]
    with torch.no_grad():  # (fake tensors would skip the arithmetic but cost seconds to set up)
        ShapeProp(gm).propagate(*args)

    G = _Groups()
    env: dict[fx.Node, object] = {}
    calls: dict[str, int] = {}

    def sp(a):
        return env.get(a) if isinstance(a, fx.Node) else None

    def block_all(node):
        for a in node.all_input_nodes:
            G.block(env.get(a))

    def consume(space, path: str):
        if isinstance(space, _Space):
            off = 0
            for g, n in space.segments:
                G.consumers[G.find(g)].append(Consumer(path, off * space.stride, space.stride))
                off += n

    def per_channel(space, path: str):
        off = 0
        for g, n in space.segments:
            G.per_channel[G.find(g)].append(Consumer(path, off, 1))
            off += n

    for node in gm.graph.nodes:
        shape = _shape(node)
        out: object = _OPAQUE if shape is not None else None
        if node.op == "placeholder":
            if shape is not None and len(shape) >= 2:
                out = _Space([(G.new(shape[1], blocked=True), shape[1])], 1)
        elif node.op == "output":
            for a in node.all_input_nodes:
                G.block(env.get(a))
        elif node.op == "call_module":
            m = gm.get_submodule(node.target)
            x = sp(node.args[0]) if node.args else None
            calls[node.target] = calls.get(node.target, 0) + 1
            if calls[node.target] > 1 and any(True for _ in m.parameters(recurse=False)):
                # a module with weights called twice: keep it whole
                block_all(node)
                out = _OPAQUE
            elif isinstance(m, _CONV) and m.groups == 1:
                if isinstance(x, _Space) and x.dim == 1 and x.stride == 1:
                    consume(x, node.target)
                else:
                    G.block(x)
                out = _Space([(G.new(m.out_channels, node.target), m.out_channels)], 1)
            elif isinstance(m, _CONV) and m.groups == m.in_channels == m.out_channels:
                if isinstance(x, _Space) and x.dim == 1 and x.stride == 1:
                    per_channel(x, node.target)
                    out = x
                else:
                    G.block(x)
            elif isinstance(m, nn.Linear):
                if isinstance(x, _Space) and shape is not None and x.dim == len(shape) - 1:
                    consume(x, node.target)
                else:
                    G.block(x)
                out = _Space([(G.new(m.out_features, node.target), m.out_features)], len(shape) - 1)
            elif isinstance(m, _BN):
                if isinstance(x, _Space) and x.dim == 1 and x.stride == 1:
                    per_channel(x, node.target)
                    out = x
                else:
                    G.block(x)
            elif isinstance(m, _PASS_MODULES):
                out = x if x is not None else out
            elif isinstance(m, nn.Flatten):
                out = _flatten(G, x, sp, node, m.start_dim, m.end_dim)
            else:
                block_all(node)
        elif node.op in ("call_function", "call_method"):
            fn = node.target
            x = sp(node.args[0]) if node.args else None
            if fn in _PASS_FUNCS or (node.op == "call_method" and fn in _PASS_METHODS):
                out = x if isinstance(x, _Space) else out
                for a in node.all_input_nodes[1:]:
                    G.block(env.get(a))
            elif fn in _BINARY or (node.op == "call_method" and fn in _BINARY_METHODS):
                out = _binary(G, node, env)
            elif fn in (torch.cat, torch.concat):
                out = _cat(G, node, env)
            elif fn is torch.flatten or (node.op == "call_method" and fn == "flatten"):
                start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
                end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
                out = _flatten(G, x, sp, node, start, end)
            elif (node.op == "call_method" and fn in ("view", "reshape")) or fn is torch.reshape:
                out = _reshape(G, x, node)
            elif fn in (torch.transpose,) or (node.op == "call_method" and fn == "transpose"):
                out = _transpose(G, x, node)
            elif node.op == "call_method" and fn == "permute" or fn is torch.permute:
                out = _permute(G, x, node)
            elif fn in (torch.mean, torch.sum, torch.amax) or (node.op == "call_method" and fn in ("mean", "sum", "amax")):
                out = _reduce(G, x, node)
            elif fn in (getattr, operator.getitem) and shape is None:
                out = None
            elif node.op == "call_method" and fn in ("size", "dim"):
                out = None
            else:
                block_all(node)
        env[node] = out

    groups = []
    roots = sorted({G.find(g) for g in range(len(G.parent))})
    for r in roots:
        if G.blocked[r] or not G.producers[r]:
            continue
        groups.append(
            ChannelGroup(
                name=G.producers[r][0], producers=list(dict.fromkeys(G.producers[r])),
                per_channel=G.per_channel[r], consumers=G.consumers[r], size=G.size[r],
            )
        )
    return groups


def _ndim(node) -> int | None:
    s = _shape(node)
    return None if s is None else len(s)


def _flatten(G, x, sp, node, start, end):
    src = node.args[0] if node.args else None
    nd = _ndim(src) if isinstance(src, fx.Node) else None
    if not isinstance(x, _Space) or nd is None:
        G.block(x)
        return _OPAQUE
    start, end = start % nd, end % nd
    if x.dim < start:
        return x
    if x.dim > end:
        return _Space(x.segments, x.dim - (end - start), x.stride)
    if x.dim == start and x.stride == 1:
        in_shape = _shape(src)
        inner = math.prod(in_shape[start + 1 : end + 1])
        return _Space(x.segments, start, inner)
    G.block(x)
    return _OPAQUE


def _reshape(G, x, node):
    if not isinstance(x, _Space):
        return _OPAQUE if _shape(node) is not None else None
    src = node.args[0]
    a, b = _shape(src), _shape(node)
    d = x.dim
    if a is None or b is None:
        G.block(x)
        return _OPAQUE
    if a[: d + 1] == b[: d + 1] and x.stride == 1:  # everything up to the channel axis unchanged
        return x
    if len(b) == d + 1 and b[:d] == a[:d] and x.stride == 1:  # flatten from the channel axis on
        return _Space(x.segments, d, math.prod(a[d + 1 :]))
    G.block(x)
    return _OPAQUE


def _transpose(G, x, node):
    if not isinstance(x, _Space):
        return _OPAQUE
    nd = _ndim(node)
    a = node.args[1] % nd
    b = node.args[2] % nd
    if x.stride != 1 and x.dim in (a, b):
        G.block(x)
        return _OPAQUE
    d = b if x.dim == a else a if x.dim == b else x.dim
    return _Space(x.segments, d, x.stride)


def _permute(G, x, node):
    if not isinstance(x, _Space) or x.stride != 1:
        G.block(x)
        return _OPAQUE
    perm = node.args[1:] if not isinstance(node.args[1], (tuple, list)) else node.args[1]
    nd = len(perm)
    perm = [p % nd for p in perm]
    return _Space(x.segments, perm.index(x.dim), 1)


def _reduce(G, x, node):
    if not isinstance(x, _Space):
        return _OPAQUE
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    keep = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
    src_nd = _ndim(node.args[0])
    if dims is None or src_nd is None:
        G.block(x)
        return _OPAQUE
    dims = [d % src_nd for d in (dims if isinstance(dims, (tuple, list)) else [dims])]
    if x.dim in dims or x.stride != 1:
        G.block(x)
        return _OPAQUE
    return _Space(x.segments, x.dim if keep else x.dim - sum(d < x.dim for d in dims), 1)


def _binary(G, node, env):
    tensors = [a for a in node.args if isinstance(a, fx.Node) and _shape(a) is not None]
    spaces = [env.get(a) for a in tensors]
    known = [s for s in spaces if isinstance(s, _Space)]
    if not known:
        return _OPAQUE
    first = known[0]
    out_shape = _shape(node)
    for a, s in zip(tensors, spaces):
        if isinstance(s, _Space):
            if s is first:
                continue
            same = (
                s.dim == first.dim and s.stride == first.stride
                and [n for _, n in s.segments] == [n for _, n in first.segments]
            )
            if same:
                for (g1, _), (g2, _) in zip(first.segments, s.segments):
                    G.union(g1, g2)
            else:
                G.block(s)
                G.block(first)
        else:
            # a tensor of unknown channels: fine only if it broadcasts along the channel axis
            sh = _shape(a)
            nd = len(out_shape)
            axis = first.dim - (nd - len(sh))
            if axis >= 0 and sh[axis] != 1:
                G.block(first)
    return first


def _cat(G, node, env):
    inputs = node.args[0]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    spaces = [env.get(a) for a in inputs]
    nd = _ndim(node)
    if nd is None:
        for s in spaces:
            G.block(s)
        return _OPAQUE
    dim %= nd
    if all(isinstance(s, _Space) and s.dim == dim and s.stride == 1 for s in spaces):
        return _Space([seg for s in spaces for seg in s.segments], dim, 1)
    # concatenation along another axis: the operands share channels, like an add
    if all(isinstance(s, _Space) and s.dim != dim for s in spaces):
        first = spaces[0]
        for s in spaces[1:]:
            if s.dim == first.dim and [n for _, n in s.segments] == [n for _, n in first.segments]:
                for (g1, _), (g2, _) in zip(first.segments, s.segments):
                    G.union(g1, g2)
            else:
                G.block(s)
                G.block(first)
        return first
    for s in spaces:
        G.block(s)
    return _OPAQUE
