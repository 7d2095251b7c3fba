"""The workload a model really runs: every op of one forward pass, traced at torch's dispatch level.

`trace_model(model, inputs)` runs the forward pass once under a subclass of torch's
`FlopCounterMode` with the table `sparsa info` counts with (`sparsa.metrics.cost.flop_mapping`), so
every matmul-like op is seen with its real shapes and its MACs are the flop counter's by
construction:

- mm / addmm / bmm / baddbmm / convolution become GEMMs (a convolution as its im2col GEMM, one per
  group); scaled_dot_product_attention becomes the attention products Q·Kᵀ and P·V with the softmax
  between them (count = batch × heads, for Swin batch × windows × heads);
- a batched matmul inside an attention module (eager attention) is the Q·Kᵀ (first) or P·V
  (second) product of that module's call;
- softmax, normalisations, activations, residual adds and reductions become softmax / elementwise
  ops with their element counts; views and copies cost nothing (an accelerator addresses them);
- anything else is listed in `not_simulated` by name with its share of the flop counter's MACs.

Each op carries the module that ran it and the transformer layer (block) it belongs to, so recorded
dynamic-attention masks attach to the attention call they were computed on. A GEMM run by a
compressed layer carries what the layer's `hw_annotation()` says (sparsa.models.hw_annotation):
weight bits (`Op.weight_bits`), activation bits (`Op.operand_bits`), weight density and storage
(`Op.weight_density`, `Op.weight_storage`; PENNI: per stage). A plain Linear/Conv with zeros in
its weight is annotated with its measured density. A quantized layer's own (de)quantization steps
are its datapath, not extra vector work.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from sparsa.errors import SparsaError
from sparsa.hw.ops import Op
from sparsa.models.hw_annotation import HwAnnotation, annotations_of

aten = torch.ops.aten

# layout changes and copies: free on an accelerator (address generation), not simulated as work
_FREE = frozenset("""
view _unsafe_view reshape t transpose permute expand expand_as slice select unsqueeze squeeze alias detach
clone contiguous _to_copy copy_ copy cat stack split split_with_sizes unbind chunk narrow as_strided
as_strided_ constant_pad_nd pad embedding index index_select gather roll flip repeat tile empty empty_like
empty_strided new_empty new_zeros new_ones new_full zeros zeros_like ones ones_like full full_like arange
lift_fresh lift_fresh_copy _local_scalar_dense unfold im2col col2im diagonal movedim t_ _reshape_alias
scalar_tensor resolve_conj resolve_neg dropout native_dropout set_ fill_ zero_ bernoulli_ randn rand randint
linspace meshgrid tril triu item
device layout
""".split())  # device/layout: prim queries a shapes-only (fake tensor) pass dispatches
# reductions and pooling: one vector op per input element
_REDUCE = frozenset("""
sum mean amax amin max min argmax argmin all any prod var std var_mean std_mean norm linalg_vector_norm
logsumexp cumsum _adaptive_avg_pool2d _adaptive_avg_pool3d adaptive_avg_pool1d avg_pool1d avg_pool2d
avg_pool3d max_pool2d_with_indices max_pool3d_with_indices max_pool1d max_pool2d _adaptive_avg_pool1d
""".split())
_SOFTMAX = frozenset(("_softmax", "_log_softmax", "_safe_softmax", "softmax", "log_softmax"))
_NORM_OPS = {"native_layer_norm": 3, "native_group_norm": 3, "_fused_rms_norm": 3, "rms_norm": 3,
             "_native_batch_norm_legit_no_training": 2, "_native_batch_norm_legit": 2, "native_batch_norm": 2}
# transcendental activations take two vector ops per element (as the shape workloads count GELU)
_TWO_OP = frozenset(("gelu", "silu", "sigmoid", "tanh", "erf", "exp", "log", "softplus", "mish", "elu", "hardswish"))
_SDPA = frozenset(("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
                   "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention"))


@dataclass
class Trace:
    """What one forward pass ran, as simulator ops."""

    ops: list[Op]
    # one entry per attention call, in forward order: indices into `ops` of its qk, softmax, pv
    attention: list[dict[str, Any]]
    not_simulated: list[dict[str, Any]]  # {name, op, calls, macs, share}
    flop_counter_macs: int  # MACs torch's flop counter counted on the same pass
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def macs(self) -> int:
        return sum(op.dense_macs for op in self.ops)


def _prod(xs) -> int:
    return int(math.prod(int(x) for x in xs))


def _tensor(x):
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)):
        return next((t for t in x if isinstance(t, torch.Tensor)), None)
    return None


def _gemms(short: str, args, out) -> list[tuple[str, int, int, int, int]] | None:
    """(role, m, k, n, count) of a matmul-like op, or None if its layout is not one of these."""
    if short == "mm":
        a, b = args[0], args[1]
        return [("", a.shape[0], a.shape[1], b.shape[1], 1)]
    if short == "addmm":
        a, b = args[1], args[2]
        return [("", a.shape[0], a.shape[1], b.shape[1], 1)]
    if short in ("bmm", "baddbmm"):
        a, b = (args[0], args[1]) if short == "bmm" else (args[1], args[2])
        return [("", a.shape[1], a.shape[2], b.shape[2], a.shape[0])]
    if short in ("convolution", "_convolution"):
        x, w, o = args[0], args[1], _tensor(out)
        transposed = bool(args[6]) if len(args) > 6 else False
        groups = int(args[8]) if len(args) > 8 else 1
        if not transposed:  # im2col: rows = output positions, inner = Cin/g x kernel, cols = Cout/g
            return [("", o.shape[0] * _prod(o.shape[2:]), _prod(w.shape[1:]), w.shape[0] // groups, groups)]
        return [("", x.shape[0] * _prod(x.shape[2:]), w.shape[0] // groups, _prod(w.shape[1:]), groups)]
    if short in _SDPA:
        q, k, v = args[0], args[1], args[2]
        g = _prod(q.shape[:-2])
        L, E, S, Ev = q.shape[-2], q.shape[-1], k.shape[-2], v.shape[-1]
        return [("qk", L, E, S, g), ("pv", L, S, Ev, g)]
    return None


class _Recorder(FlopCounterMode):
    """torch's flop counter, also handing every op it executes to the tracer."""

    def __init__(self, tracer: "_Tracer"):
        from sparsa.metrics.cost import flop_mapping

        super().__init__(display=False, custom_mapping=flop_mapping())
        self.tracer = tracer

    def _count_flops(self, func_packet, out, args, kwargs):
        before = self.flop_counts["Global"].get(func_packet, 0)
        out = super()._count_flops(func_packet, out, args, kwargs)
        self.tracer.record(func_packet, args, out, self.flop_counts["Global"].get(func_packet, 0) - before)
        return out


def _layer_prefixes(model: torch.nn.Module, blocks: list[str]) -> list[tuple[str, int, str]]:
    """(module path prefix, layer, tag) of each layer's modules: the block itself (tag ""), then entry i of
    every ModuleList of the same length beside the one holding block i (XLM keeps attentions[i], ffns[i] and
    its norms in parallel lists; discovery reads its FFN there too), tagged with that list's name so op names
    stay apart."""
    from sparsa.models.discovery import parallel_entries

    out = [(b, i, "") for i, b in enumerate(blocks)]
    for i, b in enumerate(blocks):
        out += [(e, i, e.rsplit(".", 2)[-2]) for e in parallel_entries(model, b)]
    return out


class _Tracer:
    def __init__(self, model: torch.nn.Module, attention_modules: list[str], blocks: list[str]):
        self.names = {id(m): n for n, m in model.named_modules()}
        # read before the forward pass: counting a weight's zeros inside it would be traced as work
        self.annotations = {id(m): annotations_of(m) for m in model.modules()}
        self.attention_modules = set(attention_modules)
        self.blocks = blocks
        self.prefixes = _layer_prefixes(model, blocks)
        self.layer_of: dict[str, tuple[int | None, str]] = {}  # path -> (layer, its name within the layer)
        self.stack: list[list] = []  # [id, name, hardware annotation(s), GEMMs run so far]
        self.frames: list[dict] = []  # open eager attention calls
        self.ops: list[Op] = []
        self.used: dict[str, int] = {}
        self.attention: list[dict[str, Any]] = []
        self.unplaced: dict[str, dict[str, Any]] = {}
        self.total_flops = 0

    # ---- module stack -----------------------------------------------------------------------
    def pre(self, module, args):
        name = self.names.get(id(module))
        if name is None:
            return
        self.stack.append([id(module), name, self.annotations.get(id(module)), 0])  # 0: GEMMs it has run so far
        if name in self.attention_modules:
            self.frames.append({"module": name, "layer": self._layer(name), "qk": None, "softmax": None, "pv": None,
                                "done": False})

    def post(self, module, args, output):
        if not self.stack or self.stack[-1][0] != id(module):
            return
        name = self.stack.pop()[1]
        if self.frames and self.frames[-1]["module"] == name:
            f = self.frames.pop()
            if not f["done"] and f["qk"] is not None and f["pv"] is not None:
                self.attention.append({k: f[k] for k in ("module", "layer", "qk", "softmax", "pv")})

    def _layer(self, path: str) -> int | None:
        return self._place(path)[0]

    def _place(self, path: str) -> tuple[int | None, str]:
        """(layer, the path within it, prefixed by its parallel list's name), found once per path."""
        if path not in self.layer_of:
            self.layer_of[path] = next(((i, ".".join(x for x in (tag, path[len(p) + 1:]) if x))
                                        for p, i, tag in self.prefixes if path == p or path.startswith(p + ".")),
                                       (None, ""))
        return self.layer_of[path]

    # ---- ops ----------------------------------------------------------------------------------
    def _name(self, path: str, layer: int | None, what: str) -> str:
        if layer is not None:
            rel = self._place(path)[1]
            base = f"L{layer}." + (f"{rel}.{what}" if rel else what)
        else:
            base = f"{path}.{what}" if path else what
        n = self.used.get(base, 0)
        self.used[base] = n + 1
        return base if n == 0 else f"{base}#{n + 1}"

    def _add(self, op: Op) -> int:
        self.ops.append(op)
        return len(self.ops) - 1

    def record(self, packet, args, out, flops: int) -> None:
        short = str(packet).rsplit(".", 1)[-1]
        frame = self.stack[-1] if self.stack else None
        path, ann = (frame[1], frame[2]) if frame else ("", None)
        layer = self._layer(path)
        self.total_flops += flops
        if flops or short in _SDPA:
            gemms = _gemms(short, args, out) if flops else None
            if gemms is None or 2 * sum(m * k * n * c for _, m, k, n, c in gemms) != flops:
                self._unplaced(path, short, str(packet), flops // 2)
                return
            if short in _SDPA:
                self._sdpa(path, layer, gemms)
                return
            _, m, k, n, c = gemms[0]
            role = self._eager_role(short)
            if frame is not None:
                ann = ann[frame[3]] if isinstance(ann, tuple) and frame[3] < len(ann) else ann
                frame[3] += 1
            idx = self._add(Op(self._name(path, layer, role or short), "gemm", layer, int(m), int(k), int(n),
                               count=int(c), module=path, role=role, **_op_fields(ann)))
            if role:
                self.frames[-1][role] = idx
            return
        if short in _FREE or _fused(ann):  # a quantized layer's (de)quantization is its GEMM's datapath
            return
        o = _tensor(out)
        if short in _SOFTMAX and o is not None:
            dim = int(args[1]) if len(args) > 1 and isinstance(args[1], int) else -1
            rows = o.numel() // max(1, o.shape[dim]) if o.dim() else 1
            idx = self._add(Op(self._name(path, layer, "softmax"), "softmax", layer, elems=o.numel(), rows=rows,
                               module=path, role="softmax" if self._in_attention() else ""))
            if self._in_attention() and self.frames[-1]["qk"] is not None and self.frames[-1]["softmax"] is None:
                self.frames[-1]["softmax"] = idx
            return
        per = _NORM_OPS.get(short)
        if per is None and short in _REDUCE:
            x = _tensor(args[0] if args else None)
            if x is not None:
                self._add(Op(self._name(path, layer, short), "elementwise", layer, elems=x.numel(), module=path))
            return
        if per is None and _is_pointwise(packet):
            per = 2 if short.rstrip("_") in _TWO_OP else 1
        if per is None:
            self._unplaced(path, short, str(packet), 0)
            return
        if o is not None and o.numel():
            self._add(Op(self._name(path, layer, short), "elementwise", layer, elems=o.numel(), ops_per_elem=per,
                         module=path))

    def _in_attention(self) -> bool:
        return bool(self.frames) and self.stack and self.stack[-1][1] == self.frames[-1]["module"] \
            and not self.frames[-1]["done"]

    def _eager_role(self, short: str) -> str:
        """qk / pv for the batched matmuls an attention module runs itself (eager attention)."""
        if short not in ("bmm", "baddbmm") or not self._in_attention():
            return ""
        f = self.frames[-1]
        if f["qk"] is None:
            return "qk"
        return "pv" if f["pv"] is None else ""

    def _sdpa(self, path: str, layer: int | None, gemms) -> None:
        (_, L, E, S, g), (_, _, _, Ev, _) = gemms
        qk = self._add(Op(self._name(path, layer, "qk"), "gemm", layer, int(L), int(E), int(S), count=int(g),
                          module=path, role="qk"))
        sm = self._add(Op(self._name(path, layer, "softmax"), "softmax", layer, elems=int(g * L * S),
                          rows=int(g * L), module=path, role="softmax"))
        pv = self._add(Op(self._name(path, layer, "pv"), "gemm", layer, int(L), int(S), int(Ev), count=int(g),
                          module=path, role="pv"))
        self.attention.append({"module": path, "layer": layer, "qk": qk, "softmax": sm, "pv": pv})
        if self.frames and self.frames[-1]["module"] == path:
            self.frames[-1]["done"] = True

    def _unplaced(self, path: str, short: str, op: str, macs: int) -> None:
        name = f"{path}.{short}" if path else short
        d = self.unplaced.setdefault(name, {"name": name, "op": op, "calls": 0, "macs": 0})
        d["calls"] += 1
        d["macs"] += int(macs)


def _op_fields(ann: "HwAnnotation | tuple | None") -> dict:
    """The Op fields a layer's hardware annotation sets (a tuple past its GEMMs: none)."""
    if not isinstance(ann, HwAnnotation):
        return {}
    return {"weight_bits": ann.weight_bits, "operand_bits": ann.act_bits, "weight_density": ann.weight_density,
            "weight_storage": ann.storage}


def _fused(ann) -> bool:
    anns = ann if isinstance(ann, tuple) else (ann,)
    return any(a is not None and a.fused_datapath for a in anns)


_POINTWISE: dict[Any, bool] = {}


def _is_pointwise(packet) -> bool:
    if packet not in _POINTWISE:
        try:
            _POINTWISE[packet] = any(torch.Tag.pointwise in getattr(packet, o).tags for o in packet.overloads())
        except Exception:  # an op without overload metadata: not placeable as pointwise
            _POINTWISE[packet] = False
    return _POINTWISE[packet]


def _traced(model, inputs: dict, attention_modules: list[str], blocks: list[str], *, fake: bool, what: str):
    """One forward pass under the recorder: (tracer, counter). `fake`: on shapes only (FakeTensorMode)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    tracer = _Tracer(model, attention_modules, blocks)
    pre = torch.nn.modules.module.register_module_forward_pre_hook(tracer.pre)
    post = torch.nn.modules.module.register_module_forward_hook(tracer.post, always_call=True)
    try:
        # the fake mode is entered first so that the recorder sees every op before it is faked
        with FakeTensorMode(allow_non_fake_inputs=True) if fake else contextlib.nullcontext(), \
                _Recorder(tracer) as counter, torch.no_grad():
            model(**inputs)
    except SparsaError:
        raise
    except Exception as e:
        if fake:
            raise
        raise SparsaError(f"the forward pass of {what} failed on {describe_inputs(inputs)}: {type(e).__name__}: {e}",
                          hint="simulate the model at an input size it accepts (text: --seq-len within its "
                               "position limit; images/video: the size in its config)") from None
    finally:
        pre.remove()
        post.remove()
    return tracer, counter


def _shapes_only(model, inputs: dict, attention_modules: list[str], blocks: list[str]):
    """`_traced` on fake tensors: every op with its real shapes, no arithmetic (a full-size forward
    costs seconds; the workload needs only shapes). None where the forward needs values (a
    data-dependent branch, an op without a shape rule): the caller then runs it for real. Whatever the
    forward stores on its modules (a cache) is put back as it was, so no fake tensor stays behind."""
    saved = [(m, dict(m.__dict__), dict(m._parameters), dict(m._buffers)) for m in model.modules()]
    try:
        return _traced(model, inputs, attention_modules, blocks, fake=True, what="")
    except Exception:  # noqa: BLE001 - anything the fake pass cannot do, the real one does (or explains)
        return None
    finally:
        for m, d, params, bufs in saved:
            m.__dict__.clear()
            m.__dict__.update(d)
            m._parameters.clear()
            m._parameters.update(params)
            m._buffers.clear()
            m._buffers.update(bufs)


def trace_model(model: torch.nn.Module, inputs: dict, *, attention_modules: list[str] = (),
                blocks: list[str] = (), what: str = "the model", shapes_only: bool = True) -> Trace:
    """Run `model(**inputs)` once (no grad) and return the ops it ran.

    shapes_only (default): the pass runs on fake tensors (shapes, no arithmetic), falling back to a real
    pass where the model's forward needs values or is given an attention mask; both give the same ops.

    attention_modules: names of the modules that run one attention call each (eager attention's
    batched matmuls inside them are its Q·Kᵀ and P·V); blocks: the module names of the transformer
    layers, in order (an op's `layer` is the index of the block it runs in, None outside any)."""
    # transformers builds attention masks another way on fake tensors (it skips its value checks), so a
    # model given a mask is traced for real: the fake pass must run exactly the ops the real one runs
    fake_ok = shapes_only and "attention_mask" not in inputs
    done = _shapes_only(model, inputs, list(attention_modules), list(blocks)) if fake_ok else None
    if done is None:
        done = _traced(model, inputs, list(attention_modules), list(blocks), fake=False, what=what)
    tracer, counter = done
    total = int(counter.get_total_flops() // 2)
    if int(tracer.total_flops // 2) != total:  # every counted op passed through the tracer
        raise SparsaError(f"tracing {what} saw {tracer.total_flops // 2} MACs, the flop counter {total}",
                          hint="this is a bug in sparsa's tracer; please report it with the model")
    unplaced = sorted(tracer.unplaced.values(), key=lambda d: -d["macs"])
    for d in unplaced:
        d["share"] = d["macs"] / total if total else 0.0
    return Trace(tracer.ops, tracer.attention, unplaced, total, {"input": describe_inputs(inputs)})


def describe_inputs(inputs: dict) -> str:
    parts = [f"{k} {list(v.shape)}" for k, v in inputs.items() if isinstance(v, torch.Tensor)]
    return ", ".join(parts) or "no tensor inputs"
