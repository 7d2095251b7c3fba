"""Structural discovery: heads and FFN neurons of any Hugging Face encoder, found in its module tree.

Used for every `config.model_type` that no hand-written family names (those stay as overrides).
What it looks for, per module:

  attention  a module with child Linears named like query/key/value (`query`, `q`, `q_proj`, `q_lin`,
             `query_proj`, ...), or one fused `qkv` Linear of three equal blocks; its output
             projection is a child named like `o_proj`/`out_proj`/`dense`, or else the one Linear beside
             it (under its parent) that maps the heads' width back to the model width (BERT's
             `attention.output.dense`); the head count is the module's `num_attention_heads` /
             `num_heads` / `n_heads`, else the config's `num_attention_heads`
  FFN        in the layer (the ModuleList entry) holding an attention module: the one Linear that widens
             the model width to some I and the one that maps I back (two Linears around an activation),
             with any depthwise conv on the I channels between them (Mix-FFN); another conv or norm of
             width I in the layer leaves the FFN unpruned

An attention module whose forward does not call transformers' attention interface (it computes
softmax(q·kᵀ)·v itself) is probed for sparsa's generic attention forward (`sparsa.models.attention_forward`),
which then carries dynamic attention, and pruned heads of a fused qkv Linear (TimeSformer).

Heads are offered for pruning only where removing them is known to be safe: separate Q/K/V with a
fixed head width stored on the module (`attention_head_size` / `head_dim`; a forward that derives the
width from the hidden size breaks once heads go), or a module the generic forward reproduces (it then
stands in once heads are gone), and no per-head tensor shared across layers. Otherwise the group is
still listed (the simulator and attention methods read it) with `fixed` saying why its heads stay.
Decoders (causal attention) are refused.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
from torch import nn

from sparsa.errors import SparsaError
from sparsa.models.attention_forward import WrapSpec, is_wrapped, probe, wrap
from sparsa.models.attention_forward import head_dim as wrapped_head_dim
from sparsa.models.families import FALLBACK, REGISTER_HINT, FamilyAdapter, register_family
from sparsa.models.head_probe import Candidate, removal_breaks
from sparsa.models.input_spec import input_config
from sparsa.models.units import FFNGroup, HeadGroup

DISCOVERED = FALLBACK  # the family name of models found by discovery

Q_NAMES = ("query", "q", "q_proj", "q_lin", "query_proj", "wq", "q_head")
K_NAMES = ("key", "k", "k_proj", "k_lin", "key_proj", "wk", "k_head")
V_NAMES = ("value", "v", "v_proj", "v_lin", "value_proj", "wv", "v_head")
O_NAMES = ("o_proj", "o", "out_proj", "out_lin", "wo", "dense", "post_proj", "proj")  # proj: PVT-v2, timm-style
FUSED_NAMES = ("qkv", "in_proj", "query_key_value", "qkv_proj", "wqkv")
HEADS_ATTRS = ("num_attention_heads", "num_heads", "n_heads", "n_head")
WIDTH_ATTRS = ("all_head_size", "inner_dim")
HEAD_DIM_ATTRS = ("attention_head_size", "head_dim", "head_size")
# parameters holding one entry per head (relative-position bias tables) are recognised by name
PER_HEAD_WORDS = ("relative", "position_bias", "bias_table")


def _linear(m) -> bool:
    # nn.Linear, or a sparsa layer standing in for one (sparsa.quant's QuantLinear: it records its shape);
    # a model's own Linear-like class (I-BERT's QuantLinear) is not one sparsa can slice or quantize
    return isinstance(m, nn.Linear) or (callable(getattr(m, "sparsa_shape", None))
                                        and hasattr(m, "in_features") and hasattr(m, "out_features"))


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _parent(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""


@dataclass
class AttentionBlock:
    name: str  # the module holding Q/K/V (its head-count attributes get updated)
    q: str
    k: str
    v: str
    o: str
    layer: str
    fused: bool = False
    per_head: list[tuple[str, int]] = field(default_factory=list)
    fixed: str = ""  # why the heads may not be removed ("" = they may)
    calls_interface: bool = True  # its forward calls transformers' attention interface
    wrap: WrapSpec | None = None  # how the generic attention forward stands in (not calling the interface)
    wrap_problem: str = ""  # why it cannot (not calling the interface, no WrapSpec)
    wrap_when_pruned: bool = False  # its own forward breaks once heads are gone: the generic one stands in


@dataclass
class Layout:
    attention: list[AttentionBlock]
    ffn: list[FFNGroup]  # sizes are read live by the adapter
    notes: list[str] = field(default_factory=list)
    ffn_missing: dict[str, str] = field(default_factory=dict)  # layer -> why no FFN was found there
    probed: bool = False  # head removal tried on the modules that compute attention themselves


def _children_linears(m: nn.Module) -> dict[str, nn.Module]:
    return {n: c for n, c in m.named_children() if _linear(c)}


def _pick(names: tuple[str, ...], lins: dict[str, nn.Module]) -> str | None:
    low = {n.lower(): n for n in lins}
    return next((low[n] for n in names if n in low), None)


def _layer_of(model: nn.Module, path: str) -> str:
    """The entry of a ModuleList that holds `path` (the transformer layer), else its grandparent."""
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        if isinstance(model.get_submodule(".".join(parts[:i - 1]) if i > 1 else ""), nn.ModuleList) and parts[i - 1].isdigit():
            return ".".join(parts[:i])
    return _parent(_parent(path))


def _heads(model: nn.Module, attn: nn.Module, config) -> int | None:
    for a in HEADS_ATTRS:
        v = getattr(attn, a, None)
        if isinstance(v, int) and v > 0:
            return v
    v = getattr(config, "num_attention_heads", None)
    return v if isinstance(v, int) and v > 0 else None


def _is_causal(attn: nn.Module, config) -> bool:
    return bool(getattr(attn, "is_causal", False)) or bool(getattr(config, "is_decoder", False))


def _find_o(model: nn.Module, name: str, attn: nn.Module, lins: dict, taken: set, width: int, hidden: int) -> str | None:
    own = {n: m for n, m in lins.items() if n not in taken and m.in_features == width and m.out_features == hidden}
    pick = _pick(O_NAMES, own)
    if pick:
        return _join(name, pick)
    parent = _parent(name)
    if not name:
        return None
    found = [n for n, m in model.get_submodule(parent).named_modules()
             if _linear(m) and m.in_features == width and m.out_features == hidden
             and not _join(parent, n).startswith(name + ".") and _join(parent, n) != name]
    return _join(parent, found[0]) if len(found) == 1 else None


def _per_head_params(model: nn.Module, heads: int, layer: str, layers: list[str]) -> tuple[list, list]:
    """(per-head params inside `layer` as (path, axis), per-head params outside every layer: shared)."""
    inside, outside = [], []
    # a Linear's weight (Swin-v2's position-bias MLP) is no raw table: quantization replaces the Linear
    in_linears = {_join(n, p) for n, m in model.named_modules() if _linear(m) for p, _ in m.named_parameters()}
    for pname, p in model.named_parameters():
        low = pname.lower()
        if not any(w in low for w in PER_HEAD_WORDS) or heads not in p.shape or pname in in_linears:
            continue
        axis = max(i for i, s in enumerate(p.shape) if s == heads)
        if pname.startswith(layer + "."):
            inside.append((pname, axis))
        elif not any(pname.startswith(other + ".") for other in layers):
            outside.append(pname)
    return inside, outside


def discover(model: nn.Module, config=None) -> Layout:
    """The attention blocks and FFNs of `model` (see the module docstring). Raises SparsaError when it
    finds no encoder attention."""
    config = config if config is not None else getattr(model, "config", None)
    blocks: list[AttentionBlock] = []
    skipped: list[str] = []
    for name, m in model.named_modules():
        lins = _children_linears(m)
        if not lins:
            continue
        q, k, v = _pick(Q_NAMES, lins), _pick(K_NAMES, lins), _pick(V_NAMES, lins)
        fused = None
        if not (q and k and v):
            f = _pick(FUSED_NAMES, lins)
            if f and lins[f].out_features % 3 == 0:  # (three times the width until heads are pruned)
                fused = f
            else:
                continue
        if _is_causal(m, config):
            skipped.append(f"{name or '(root)'} ({type(m).__name__}) is causal (decoder) attention")
            continue
        if fused:
            width, hidden = lins[fused].out_features // 3, lins[fused].in_features
            taken = {fused}
        else:
            width, hidden = lins[q].out_features, lins[q].in_features
            if lins[k].out_features != width or lins[v].out_features != width:
                skipped.append(f"{name} ({type(m).__name__}): query/key/value widths differ")
                continue
            taken = {q, k, v}
        o = _find_o(model, name, m, lins, taken, width, hidden)
        if o is None:
            skipped.append(f"{name} ({type(m).__name__}): no single output projection ({width} -> {hidden}) found")
            continue
        heads = _heads(model, m, config)
        if heads is None or width % heads:
            skipped.append(f"{name} ({type(m).__name__}): no head count (num_attention_heads) dividing width {width}")
            continue
        qp, kp, vp = (_join(name, fused),) * 3 if fused else (_join(name, q), _join(name, k), _join(name, v))
        blk = AttentionBlock(name, qp, kp, vp, o, _layer_of(model, qp), fused=bool(fused))
        _probe_forward(blk, m, name, fused, (q, k, v), o)
        if fused and not blk.wrap:
            blk.fixed = f"{name} projects Q, K and V with one fused Linear ({fused})"
        elif not fused and not blk.wrap and not any(isinstance(getattr(m, a, None), int) for a in HEAD_DIM_ATTRS):
            blk.fixed = (f"{name} ({type(m).__name__}) stores no fixed head width "
                         f"({'/'.join(HEAD_DIM_ATTRS)}), so its forward may derive it from the hidden size")
        blocks.append(blk)
    if not blocks:
        cls = type(model).__name__
        why = "; ".join(skipped) if skipped else _unclassified(model)
        raise SparsaError(f"discovery found no encoder attention in {cls}: {why}", hint=REGISTER_HINT)
    # a module of a class read elsewhere but not here (Hiera's stage-changing blocks widen inside the
    # attention): a layout without it would be silently partial
    read = {type(model.get_submodule(b.name)).__name__ for b in blocks}
    partial = [s for s in skipped if s.split(" (", 1)[1].split(")", 1)[0] in read]
    if partial:
        raise SparsaError(f"discovery cannot read every attention layer of {type(model).__name__}: "
                          f"{'; '.join(partial[:2])}", hint=REGISTER_HINT)
    per_layer: dict[str, list[AttentionBlock]] = {}
    for b in blocks:
        per_layer.setdefault(b.layer, []).append(b)
    for layer, bs in per_layer.items():
        for b in bs:
            heads = _heads(model, model.get_submodule(b.name), config)
            inside, outside = _per_head_params(model, heads, layer, list(per_layer))
            if outside and not b.fixed:
                b.fixed = f"heads share {outside[0]} across layers"
            b.per_head = [(p, ax) for p, ax in inside if p.startswith(b.name + ".") or len(bs) == 1]
            if not b.fixed and (other := _other_per_head(model, b, heads)):
                b.fixed = f"{b.name} holds {other}, which head pruning does not slice"
    found = {layer: _ffn_in_layer(model, layer, bs) for layer, bs in per_layer.items()}
    ffn = [g for g in found.values() if isinstance(g, FFNGroup)]
    return Layout(blocks, ffn, skipped, {layer: g for layer, g in found.items() if isinstance(g, str)})


def _other_per_head(model: nn.Module, b: AttentionBlock, heads: int) -> str | None:
    """A parameter of the attention module, outside its projections and known per-head tables, with an
    axis of the head count (Swin-v2's continuous position bias, Nystromformer's conv), or another Linear
    to the heads' width: its heads stay."""
    known = {p for p, _ in b.per_head}
    projections = tuple(p + "." for p in {b.q, b.k, b.v, b.o})
    for mname, m in model.get_submodule(b.name).named_modules():
        for n, p in m.named_parameters(recurse=False):
            full, pname = _join(b.name, mname, n), _join(mname, n)
            # a conv's kernel axes are space, not channels (PVT's / SegFormer's sequence-reduction conv)
            axes = p.shape[:2] if isinstance(m, nn.modules.conv._ConvNd) else p.shape
            if full not in known and not full.startswith(projections) and heads in axes:
                return f"{pname} {list(p.shape)} with one entry per head (a position-bias MLP, a conv over heads)"
    # another Linear writing the heads' width (Longformer's query_global/key_global/value_global): its rows
    # belong to the heads too, and a forward using it would meet pruned q/k/v with unpruned ones
    q = model.get_submodule(b.q)
    width = q.out_features // (3 if b.fused else 1)
    for cname, c in model.get_submodule(b.name).named_modules():
        full = _join(b.name, cname)
        if cname and _linear(c) and c.out_features == width and full not in {b.q, b.k, b.v, b.o}:
            return f"{cname} [{c.in_features} -> {c.out_features}], a second projection to the heads' width"
    return None


def _unclassified(model: nn.Module) -> str:
    """Which attention-like modules (by class name) discovery could not read, and what they hold."""
    seen = [(n, m) for n, m in model.named_modules() if "attention" in type(m).__name__.lower()]
    if not seen:
        return "no module has query/key/value (or fused qkv) Linears"
    # the one holding weighted layers (Linears, convs, a model's own Linear-like class) is the attention
    # itself: Funnel's first is a position-encoding helper, I-BERT's first only wraps it
    name, m = next(((n, m) for n, m in seen
                    if any(isinstance(getattr(c, "weight", None), torch.Tensor) for c in m.children())), seen[0])
    kids = ", ".join(f"{n} ({type(c).__name__})" for n, c in m.named_children()) or "no children"
    return (f"{name} ({type(m).__name__}) holds {kids}, not query/key/value Linears "
            f"({'/'.join(Q_NAMES)}, ...) or one fused qkv Linear ({'/'.join(FUSED_NAMES)})"
            + (f"; {len(seen) - 1} more attention modules like it" if len(seen) > 1 else ""))


def _calls_interface(m: nn.Module) -> bool:
    try:
        src = inspect.getsource(type(m).forward)
    except (OSError, TypeError):
        src = ""
    return "ALL_ATTENTION_FUNCTIONS" in src


def _probe_forward(blk: AttentionBlock, m: nn.Module, name: str, fused: str | None, qkv: tuple, o: str) -> None:
    """Where `m` computes its attention itself: can the generic attention forward stand in for it?"""
    blk.calls_interface = _calls_interface(m)
    if blk.calls_interface:
        return
    q, k, v = (fused,) * 3 if fused else qkv
    heads_attr = next((a for a in HEADS_ATTRS if isinstance(getattr(m, a, None), int)), None)
    inner_o = o[len(name) + 1:] if name and o.startswith(name + ".") and "." not in o[len(name) + 1:] else None
    got = probe(m, q, k, v, heads_attr, inner_o)
    if isinstance(got, str):
        blk.wrap_problem = got
        return
    blk.wrap = got
    blk.wrap_when_pruned = bool(fused) or not any(isinstance(getattr(m, a, None), int) for a in HEAD_DIM_ATTRS)


def parallel_entries(model: nn.Module, layer: str) -> list[str]:
    """Entry i of every other ModuleList of the same length beside the one holding `layer` (= its entry i)."""
    lst, _, idx = layer.rpartition(".")
    if not idx.isdigit() or not isinstance(model.get_submodule(lst), nn.ModuleList):
        return []
    parent, n = _parent(lst), len(model.get_submodule(lst))
    return [_join(parent, name, idx) for name, m in model.get_submodule(parent).named_children()
            if isinstance(m, nn.ModuleList) and len(m) == n and _join(parent, name) != lst]


def _ffn_in_layer(model: nn.Module, layer: str, blocks: list[AttentionBlock]) -> FFNGroup | str:
    """The layer's FFN, or why none was found (said by `sparsa info` and a refused --ffn)."""
    attn_paths = {p for b in blocks for p in (b.q, b.k, b.v, b.o)}
    hidden = model.get_submodule(blocks[0].q).in_features
    lins = {_join(layer, n): m for n, m in model.get_submodule(layer).named_modules()
            if _linear(m) and _join(layer, n) not in attn_paths}
    widen = [p for p, m in lins.items() if m.in_features == hidden and m.out_features != hidden]
    if not widen:  # XLM keeps its layers in parallel lists (attentions[i], ffns[i]): entry i of the others
        lins = {_join(e, n): m for e in parallel_entries(model, layer) for n, m in model.get_submodule(e).named_modules()
                if _linear(m)}
        widen = [p for p, m in lins.items() if m.in_features == hidden and m.out_features != hidden]
    gate, halves = None, 1
    inside = tuple(b.name + "." for b in blocks if b.name != layer)  # an attention module's own other Linears
    widths = {lins[p].out_features for p in widen}
    if len(widen) == 2 and len(widths) == 1 and not any(p.startswith(inside) for p in widen):
        # a gated FFN: gate and up projections of one width, outside the attention
        gate = next((p for p in widen if "gate" in p.rsplit(".", 1)[-1].lower()), widen[1])
        widen = [p for p in widen if p != gate]
    if len(widen) != 1:
        return (f"{layer} has {len(widen)} Linears from the model width {hidden} to another width"
                + (f" ({', '.join(widen[:3])}{', ...' if len(widen) > 3 else ''}: several FFNs)" if widen else "")
                + "; discovery prunes one widening (or a gate and an up projection) and one narrowing Linear per layer")
    inner = lins[widen[0]].out_features
    narrow = [p for p, m in lins.items() if m.in_features == inner and m.out_features == hidden]
    if not narrow and not gate and inner % 2 == 0:  # one Linear holding both halves of a gated FFN (ModernBERT's Wi)
        narrow = [p for p, m in lins.items() if m.in_features == inner // 2 and m.out_features == hidden]
        inner, halves = inner // 2, 2
    if len(narrow) != 1:
        return (f"{layer}: {widen[0]} widens {hidden} -> {inner}, and {len(narrow)} Linears map {inner} back to "
                f"{hidden} (one is needed)")
    between = _on_inner_channels(model, layer, blocks, inner, hidden)
    if isinstance(between, str):
        return between
    return FFNGroup(name=layer, fc1=widen[0], fc2=narrow[0], size=inner, per_channel=between, gate=gate,
                    halves=halves)


def _on_inner_channels(model: nn.Module, layer: str, blocks: list[AttentionBlock], inner: int,
                       hidden: int) -> list[str] | str:
    """The layer's other modules (outside its attention) on the FFN's `inner` channels: depthwise convs
    go with the neurons (SegFormer's / PVT-v2's Mix-FFN: fc1 -> depthwise conv -> fc2); any other conv
    or norm of that width makes the FFN unprunable (the reason is returned), as slicing only fc1 and fc2
    would break it. An FFN as wide as the model cannot be told apart by width: [] (its convs are recorded
    when pruned)."""
    if inner == hidden:
        return []
    attn = tuple(b.name + "." for b in blocks)
    out = []
    for n, m in model.get_submodule(layer).named_modules():
        path = _join(layer, n)
        if path.startswith(attn) or _linear(m):
            continue
        if isinstance(m, nn.modules.conv._ConvNd) and inner in (m.in_channels, m.out_channels):
            if not m.groups == m.in_channels == m.out_channels == inner:
                return f"{layer}: {path} is a conv on the FFN's {inner} inner channels that is not depthwise"
            out.append(path)
        elif any(inner in p.shape for p in m.parameters(recurse=False)):
            return f"{layer}: {path} ({type(m).__name__}) holds a {inner}-wide parameter on the FFN's inner channels"
    return out


# ------------------------------------------------------------------------------ the adapter

_CACHE: dict = {}


def _layout_for(model: nn.Module, config) -> Layout:
    # the class, the module tree and the Linears' sizes: a pruned model's layout is found on its own (an FFN
    # pruned to the model width looks like any other square Linear, hence `sparsa_ffn_paths`)
    key = (type(model), tuple((n, type(m).__name__, getattr(m, "in_features", None), getattr(m, "out_features", None))
                              for n, m in model.named_modules()))
    if key not in _CACHE:
        if len(_CACHE) > 32:
            _CACHE.clear()
        _CACHE[key] = discover(model, config)
    return _CACHE[key]


def _saved_ffn(model: nn.Module, config) -> list[FFNGroup]:
    """The FFNs recorded in the config when the model was pruned, where they still chain up
    (model width -> I -> model width); [] when none are recorded or they do not fit."""
    saved = getattr(config, "sparsa_ffn_paths", None)
    if not isinstance(saved, list) or not saved:
        return []
    out = []
    for entry in saved:  # [fc1, fc2, depthwise convs between them...], or {fc1, fc2, gate, halves, per_channel}
        if isinstance(entry, list) and len(entry) >= 2:
            entry = {"fc1": entry[0], "fc2": entry[1], "per_channel": entry[2:]}
        if not isinstance(entry, dict):
            return []
        spec, halves, gate_path = entry, entry.get("halves", 1), entry.get("gate")
        try:
            fc1, fc2 = model.get_submodule(spec["fc1"]), model.get_submodule(spec["fc2"])
            dw = [model.get_submodule(p) for p in spec.get("per_channel") or []]
            gate = model.get_submodule(gate_path) if gate_path else None
        except (AttributeError, KeyError, TypeError, ValueError):
            return []
        if not (isinstance(halves, int) and halves >= 1 and _linear(fc1) and _linear(fc2)
                and fc1.out_features == halves * fc2.in_features and fc1.in_features == fc2.out_features
                and (gate is None or (_linear(gate) and gate.out_features == fc2.in_features))
                and all(getattr(c, "groups", None) == c.out_channels == fc2.in_features for c in dw)):
            return []
        out.append(FFNGroup(name=_layer_of(model, spec["fc1"]), fc1=spec["fc1"], fc2=spec["fc2"], size=fc2.in_features,
                            per_channel=list(spec.get("per_channel") or []), gate=gate_path, halves=halves))
    return out


def _modality(config) -> str:
    config = input_config(config)
    if getattr(config, "num_frames", None):
        return "video"
    if getattr(config, "image_size", None) is not None:
        return "image"
    return "text"


class DiscoveredAdapter(FamilyAdapter):
    """Any Hugging Face encoder no hand-written adapter names (see the module docstring)."""

    def __init__(self, model: nn.Module, config=None):
        super().__init__(model, config)
        main = getattr(model, "main_input_name", None)
        if main not in (None, "input_ids", "pixel_values"):  # audio (input_values / input_features), ...
            raise SparsaError(f"{type(model).__name__} takes {main}; models found by discovery take text "
                              "(input_ids) or images and video (pixel_values), which is what sparsa's data and "
                              "example inputs provide",
                              hint="register a family (sparsa.models.register_family) whose adapter makes its "
                                   "example_inputs - see docs/models.md")
        self.modality = _modality(self.config)
        if main == "pixel_values" and self.modality == "text":  # (SigLIP-2: pre-patchified pixels + shapes)
            raise SparsaError(f"{type(model).__name__} takes pixel_values but its config states no image_size, "
                              "so sparsa cannot make its images",
                              hint="register a family (sparsa.models.register_family) whose adapter makes its "
                                   "example_inputs - see docs/models.md")
        self.layout = _layout_for(model, self.config)
        self._ffn = _saved_ffn(model, self.config) or self.layout.ffn
        self._fit_forwards()
        if not self.layout.probed:
            self.layout.probed = True
            self._probe_head_removal()

    def _probe_head_removal(self) -> None:
        """Modules that compute attention themselves and keep their own forward once pruned: their heads
        stay where that forward fails with one head fewer (sparsa.models.head_probe)."""
        blocks = {b.name: b for b in self.layout.attention
                  if not (b.fixed or b.calls_interface or b.wrap_when_pruned or b.fused)}
        cands = [Candidate(g.name, (g.q, g.k, g.v), g.o, g.num_heads, g.head_dim, g.attrs)
                 for g in self.head_groups() if g.name in blocks]
        if not cands:
            return
        try:
            inputs = self.example_inputs(batch=1)
        except Exception:  # noqa: BLE001 - no example input: nothing to probe with
            return
        for name, why in removal_breaks(self.model, cands, inputs).items():
            blocks[name].fixed = why

    def after_surgery(self) -> None:
        """The FFNs found on the dense model are recorded in the config (once pruned, their shapes may
        no longer tell them apart), and pruned attention modules get the forward they need."""
        if self._ffn and hasattr(self.config, "model_type"):
            self.config.sparsa_ffn_paths = [[g.fc1, g.fc2, *g.per_channel] if not (g.gate or g.halves > 1) else
                                            {"fc1": g.fc1, "fc2": g.fc2, "gate": g.gate, "halves": g.halves,
                                             "per_channel": list(g.per_channel)} for g in self._ffn]
        self._fit_forwards()

    def _fit_forwards(self) -> None:
        """Attention modules whose heads were pruned and whose own forward cannot run without them
        (a fused qkv reshaped by the hidden size) get the generic attention forward."""
        for b in self.layout.attention:
            if not b.wrap_when_pruned:
                continue
            m = self.model.get_submodule(b.name)
            full = getattr(m, b.wrap.q).in_features
            if getattr(m, b.wrap.heads_attr) * wrapped_head_dim(m, b.wrap) != full and not is_wrapped(m):
                wrap(m, b.wrap)

    def head_groups(self) -> list[HeadGroup]:
        out = []
        for b in self.layout.attention:
            attn = self.model.get_submodule(b.name)
            heads = _heads(self.model, attn, self.config)
            width = self.model.get_submodule(b.o).in_features
            head_dim = next((v for a in HEAD_DIM_ATTRS if isinstance(v := getattr(attn, a, None), int)), None)
            attrs = {a: "heads" for a in HEADS_ATTRS if isinstance(getattr(attn, a, None), int)}
            attrs.update({a: "all_head_size" for a in WIDTH_ATTRS if isinstance(getattr(attn, a, None), int)})
            out.append(HeadGroup(name=b.name, q=b.q, k=b.k, v=b.v, o=b.o, num_heads=heads,
                                 head_dim=head_dim or width // heads, attrs=attrs, per_head=list(b.per_head),
                                 fused=b.fused))
        return out

    def missing_ffn(self) -> dict[str, str]:
        """{layer: why discovery found no FFN there} (empty once FFNs were recorded at pruning)."""
        return {} if self._ffn is not self.layout.ffn else dict(self.layout.ffn_missing)

    def fixed_heads(self) -> dict[str, str]:
        """{attention module: why its heads may not be removed}."""
        return {b.name: b.fixed for b in self.layout.attention if b.fixed}

    def groups(self, kind: str) -> list:
        if kind == "heads":  # only the prunable ones: the rest keep every head
            fixed = self.fixed_heads()
            return [g for g in self.head_groups() if g.name not in fixed]
        return super().groups(kind)

    def ffn_groups(self) -> list[FFNGroup]:
        return [FFNGroup(name=g.name, fc1=g.fc1, fc2=g.fc2, size=self.model.get_submodule(g.fc1).out_features // g.halves,
                         per_channel=list(g.per_channel), gate=g.gate, halves=g.halves) for g in self._ffn]

    def attention_modules_calling_interface(self) -> dict[str, bool]:
        """{attention module: whether its forward calls transformers' attention interface} (where
        sparsa's dynamic attention hooks in)."""
        return {b.name: b.calls_interface for b in self.layout.attention}

    def generic_forwards(self) -> dict[str, WrapSpec | str]:
        """{attention module not calling the interface: how the generic attention forward stands in
        for it, or why it cannot}."""
        return {b.name: b.wrap or b.wrap_problem for b in self.layout.attention if not b.calls_interface}

    def max_seq_len(self) -> int | None:
        n = getattr(self.config, "max_position_embeddings", None)
        if not isinstance(n, int):
            return None
        for name, m in self.model.named_modules():  # RoBERTa-style positions start after the padding index
            if name.endswith("position_embeddings") and isinstance(m, nn.Embedding) and m.padding_idx is not None:
                return n - (m.padding_idx + 1)
        return n

    def example_inputs(self, batch: int = 1, seq_len: int | None = None) -> dict:
        cfg = self.config
        g = torch.Generator().manual_seed(0)
        if self.modality != "text":
            cfg = input_config(cfg)
            s = cfg.image_size
            h, w = (s, s) if isinstance(s, int) else tuple(s)[:2]
            c = int(getattr(cfg, "num_channels", 3) or 3)
            shape = (batch, int(cfg.num_frames), c, h, w) if self.modality == "video" else (batch, c, h, w)
            return {"pixel_values": torch.randn(*shape, generator=g)}
        seq_len = self.text_len(seq_len)
        vocab = getattr(cfg, "vocab_size", None)
        if not isinstance(vocab, int) or vocab < 2:  # CANINE reads Unicode code points through hash buckets
            raise SparsaError(f"{type(self.model).__name__} declares no vocab_size: discovery cannot make its "
                              "token ids (it may read characters or bytes, not a tokenizer's ids)",
                              hint="register a family (sparsa.models.register_family) whose adapter makes its "
                                   "example_inputs - see docs/models.md")
        lo = 1000 if vocab > 1000 else min(5, vocab - 1)
        ids = torch.randint(lo, vocab, (batch, seq_len), generator=g)
        params = inspect.signature(self.model.forward).parameters
        inputs = {"input_ids": ids}
        if "attention_mask" in params:
            inputs["attention_mask"] = torch.ones(batch, seq_len, dtype=torch.long)
        # token types where the model reads them: a type table (type_vocab_size > 0), or none declared (XLM adds
        # them through its word table): the tokenizer gives them, so the ONNX file must take them too
        types = getattr(cfg, "type_vocab_size", None)
        if "token_type_ids" in params and (types is None or types > 0):
            inputs["token_type_ids"] = torch.zeros(batch, seq_len, dtype=torch.long)
        return inputs

    def describe(self) -> dict:
        d = super().describe()
        d["layers"] = len({b.layer for b in self.layout.attention})  # TimeSformer: two attentions per layer
        d["model_type"] = getattr(self.config, "model_type", None)
        fixed = self.fixed_heads()
        if fixed:
            d["heads_fixed"] = fixed
        if missing := self.missing_ffn():
            d["ffn_missing"] = missing
        return d


register_family(DISCOVERED, DiscoveredAdapter,
                notes="any Hugging Face encoder no other family names: attention, FFN and layers found in the "
                      "module tree (sparsa.models.discovery)")
