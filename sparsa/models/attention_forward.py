"""A generic forward for attention modules that compute softmax(q·kᵀ)·v themselves.

Some encoders (TimeSformer's fused-qkv attention, older BERT-style copies) never call transformers'
attention interface, so sparsa's dynamic attention cannot hook in; some also derive the head width from
the hidden size, which breaks once heads are pruned. `generic_attention_forward` stands in for such a
module's forward: q, k and v from the module's own projections (three Linears, or one fused Linear whose
rows are laid out [3, heads, head_dim]), then the attention function the model's implementation names
when sparsa's dynamic attention is installed (`sparsa.attention.install`), else PyTorch's SDPA.

`probe` decides whether a module can be stood in for: its forward may take nothing but hidden states
and a mask, it may hold nothing but its projections and dropout, and on a twin with fresh random
projections its own forward and the generic one must agree. Otherwise it says why (DeBERTa's
disentangled attention takes relative positions; MPNet a shared position bias).
"""

from __future__ import annotations

import copy
import inspect
import types
from dataclasses import dataclass

import torch
from torch import nn

from sparsa.errors import SparsaError

# forward arguments the generic forward can honour; others must default to None (cross-attention inputs,
# caches: an encoder passes none) and are refused when given, or name position/bias terms it would drop
PLAIN_ARGS = ("hidden_states", "attention_mask", "head_mask", "output_attentions")
TERM_WORDS = ("pos", "rel", "bias", "rotary")
SCALE_ATTRS = ("scale", "scaling")
# float32 on |activations| ~ 1: SDPA and an explicit matmul-softmax-matmul differ by summation order only
PROBE_TOLERANCE = 1e-5


@dataclass(frozen=True)
class WrapSpec:
    q: str  # child Linear names; the same name three times for a fused [3, heads, head_dim] Linear
    k: str
    v: str
    heads_attr: str  # the module attribute holding its head count
    scale_attr: str | None  # the attribute holding the score scale (None: 1/sqrt(head_dim))
    o: str | None = None  # an output projection inside the module (applied after the heads)
    dropout: str | None = None  # a Dropout child applied to the probabilities
    returns: int = 1  # 0: the module returns a tensor; n: a tuple of n (context first, the rest None)

    @property
    def fused(self) -> bool:
        return self.q == self.k == self.v


def head_dim(module: nn.Module, spec: WrapSpec) -> int:
    width = getattr(module, spec.q).out_features // (3 if spec.fused else 1)
    return width // getattr(module, spec.heads_attr)


def _attention_fn(module):
    """The registered attention function to run, or None for plain SDPA: sparsa's, while it is installed
    and the model's implementation names it (tracing switches the implementation back)."""
    named = getattr(module, "_sparsa_attention_fn", None)
    cfg = getattr(module, "_sparsa_config", None)
    if named is None or cfg is None or getattr(cfg, "_attn_implementation", None) != named[0]:
        return None
    return named[1]


def generic_attention_forward(module, *args, **kwargs):
    """Stands in for `type(module).forward` (bound as the module's `forward`); see the module docstring."""
    spec: WrapSpec = module._sparsa_wrap
    bound = inspect.signature(type(module).forward).bind(module, *args, **kwargs)
    a = bound.arguments
    x = a.get("hidden_states", args[0] if args else None)
    items = []
    for n, val in a.items():  # **kwargs arrive as one dict, *args as one tuple
        kind = bound.signature.parameters[n].kind
        items += list(val.items()) if kind == inspect.Parameter.VAR_KEYWORD else \
            [(n, val or None)] if kind == inspect.Parameter.VAR_POSITIONAL else [(n, val)]
    given = [n for n, val in items if n not in ("self", "hidden_states", "attention_mask", "output_attentions")
             and val is not None]
    if given:
        raise SparsaError(f"{type(module).__name__}: sparsa's attention forward runs self-attention on hidden "
                          f"states only; it was given {', '.join(given)}", hint="run the model without them")
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise SparsaError(f"{type(module).__name__}: expected hidden states [batch, tokens, width]",
                          hint="sparsa's attention forward handles token sequences only")
    B, N, _ = x.shape
    H = getattr(module, spec.heads_attr)
    if spec.fused:
        q, k, v = getattr(module, spec.q)(x).reshape(B, N, 3, H, -1).permute(2, 0, 3, 1, 4).unbind(0)
    else:
        q, k, v = (getattr(module, p)(x).reshape(B, N, H, -1).transpose(1, 2) for p in (spec.q, spec.k, spec.v))
    D = q.shape[-1]
    scale = float(getattr(module, spec.scale_attr)) if spec.scale_attr else D ** -0.5
    drop = getattr(module, spec.dropout) if spec.dropout else None
    p = float(getattr(drop, "p", 0.0)) if drop is not None and drop.training else 0.0
    mask = a.get("attention_mask")
    want_probs = bool(a.get("output_attentions")) and spec.returns != 0
    fn = _attention_fn(module)
    probs = None
    if fn is not None:  # sparsa's attention (e.g. HDP): its probabilities are the pruned ones
        out, probs = fn(module, q, k, v, mask, scaling=scale, dropout=p)  # [B, N, H, D]
    elif want_probs:  # the probabilities are asked for: the explicit form, which has them
        if mask is not None and mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=q.dtype).masked_fill(~mask, float("-inf"))
        scores = (q @ k.transpose(-2, -1)) * scale + (mask.to(q.dtype) if mask is not None else 0.0)
        probs = scores.softmax(-1)
        out = (nn.functional.dropout(probs, p) if p else probs) @ v
        out = out.transpose(1, 2)
    else:
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.to(q.dtype)
        out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, scale=scale)
        out = out.transpose(1, 2)
    ctx = out.reshape(B, N, H * D)
    if spec.o:
        ctx = getattr(module, spec.o)(ctx)
    if spec.returns == 0:
        return ctx
    if want_probs:  # as HF attention modules answer output_attentions: context, then the probabilities
        return (ctx, probs) + (None,) * max(spec.returns - 2, 0)
    return (ctx,) + (None,) * (spec.returns - 1)


def wrap(module: nn.Module, spec: WrapSpec) -> None:
    """Route `module`'s forward through `generic_attention_forward` (undo: `unwrap`)."""
    module._sparsa_wrap = spec
    module.forward = types.MethodType(generic_attention_forward, module)


def unwrap(module: nn.Module) -> None:
    for attr in ("forward", "_sparsa_wrap"):
        module.__dict__.pop(attr, None)


def is_wrapped(module: nn.Module) -> bool:
    return "_sparsa_wrap" in module.__dict__


def _twin(module: nn.Module, spec: WrapSpec, hidden: int, head: int) -> tuple[nn.Module, int]:
    """A shallow copy of `module` with fresh random projections at full width (hidden // head heads), no
    dropout, in eval mode; the module itself is not touched. Returns (twin, its head count)."""
    twin = copy.copy(module)
    twin._modules, twin._parameters = dict(module._modules), dict(module._parameters)
    twin._buffers = dict(module._buffers)
    twin.__dict__.pop("forward", None)
    heads = hidden // head if hidden % head == 0 else getattr(module, spec.heads_attr)
    width = heads * head
    g = torch.Generator().manual_seed(0)
    for name in {spec.q, spec.k, spec.v}:
        lin = nn.Linear(hidden, width * (3 if spec.fused else 1))
        with torch.no_grad():
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) / hidden ** 0.5)
            lin.bias.copy_(torch.randn(lin.bias.shape, generator=g) * 0.1)
        twin._modules[name] = lin
    if spec.o:
        twin._modules[spec.o] = nn.Linear(width, getattr(module, spec.o).out_features)
    for name, child in module.named_children():
        if isinstance(child, nn.Dropout):
            twin._modules[name] = nn.Identity()
    setattr(twin, spec.heads_attr, heads)
    for attr in ("all_head_size", "inner_dim"):
        if isinstance(getattr(module, attr, None), int):
            setattr(twin, attr, width)
    for attr in ("attention_head_size", "head_dim", "head_size"):
        if isinstance(getattr(module, attr, None), int):
            setattr(twin, attr, head)
    twin.training = False
    return twin, heads


def probe(module: nn.Module, q: str, k: str, v: str, heads_attr: str | None, o: str | None = None) -> WrapSpec | str:
    """The WrapSpec under which `generic_attention_forward` reproduces `module`, or why it cannot."""
    cls = type(module).__name__
    if heads_attr is None:
        return f"{cls} stores no head count (num_heads / num_attention_heads)"
    sig = inspect.signature(type(module).forward)
    params = [p for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)][1:]
    extra = [p.name for p in params[1:] if p.name not in PLAIN_ARGS
             and (p.default is not None or any(w in p.name.lower() for w in TERM_WORDS))]
    if extra:
        return f"its forward takes {', '.join(extra)}: terms (relative positions, biases) beside q·kᵀ that " \
               "the generic attention forward cannot reproduce"
    own = {q, k, v} | ({o} if o else set())
    others = [f"{n} ({type(c).__name__})" for n, c in module.named_children()
              if n not in own and not isinstance(c, nn.Dropout)]
    others += [n for n, _ in module.named_parameters(recurse=False)]
    if others:
        return f"it holds {', '.join(others)} beside its projections, which the generic attention forward would skip"
    drops = [n for n, c in module.named_children() if isinstance(c, nn.Dropout)]
    scale_attr = next((a for a in SCALE_ATTRS if isinstance(getattr(module, a, None), float)), None)
    spec = WrapSpec(q, k, v, heads_attr, scale_attr, o, drops[0] if len(drops) == 1 else None)
    proj = getattr(module, q)
    hidden = proj.in_features
    head = head_dim(module, spec)
    twin, heads = _twin(module, spec, hidden, head)
    x = torch.randn(2, 5, hidden, generator=torch.Generator().manual_seed(1))
    try:
        with torch.no_grad():
            ref = type(module).forward(twin, x)
            twin._sparsa_wrap = spec
            got = generic_attention_forward(twin, x)
    except Exception as e:  # noqa: BLE001 - any failure means: not reproducible
        return f"its forward does not run on hidden states alone ({type(e).__name__}: {e})"
    returns = 0 if isinstance(ref, torch.Tensor) else len(ref) if isinstance(ref, tuple) and ref else -1
    ref_t = ref if returns == 0 else ref[0] if returns > 0 else None
    got_t = got[0] if isinstance(got, tuple) else got
    if not isinstance(ref_t, torch.Tensor) or ref_t.shape != got_t.shape:
        return "its forward returns something other than the attended hidden states"
    diff = float((ref_t - got_t).abs().max())
    if diff > PROBE_TOLERANCE * max(1.0, float(ref_t.abs().max())):
        return (f"its output differs from softmax(q·kᵀ·scale)·v of its own projections by up to {diff:.2g} "
                f"({heads} heads of {head}): it computes something the generic attention forward does not")
    return WrapSpec(q, k, v, heads_attr, scale_attr, o, spec.dropout, returns)
