"""Install attention pruning into Hugging Face models through transformers' `AttentionInterface`.

BERT (and the encoders laid out like it), DistilBERT, ViT/DeiT, Swin and VideoMAE (transformers 5.x) all call
`ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, ...)` from their self-attention
module (Swin passes its relative position bias + shifted-window mask as the additive mask), so one
registered function, "sparsa", covers all four. `install` tags each attention module with a
controller and its layer index and switches the model's implementation to "sparsa"; `uninstall`
restores the previous implementation and removes the tags. A padding mask for "sparsa" is built
with transformers' own sdpa mask function (registered under the same name).

Attention modules that compute softmax(q·kᵀ)·v themselves (TimeSformer) get sparsa's generic attention
forward (`sparsa.models.attention_forward`) while installed: q, k, v from their own projections, then the
same registered function. Where that forward cannot reproduce a module (DeBERTa's relative positions),
`install` refuses, naming the module class and why.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import math
import warnings

import torch

from sparsa.attention.methods import check_method, make_runner
from sparsa.errors import SparsaError
from sparsa.models.attention_forward import is_wrapped, unwrap, wrap

IMPL_NAME = "sparsa"
# sparsa families whose self-attention modules call transformers' attention interface
# ("discovered": any other HF encoder whose attention modules call the interface; checked per model)
SUPPORTED_FAMILIES = ("bert", "distilbert", "vit", "swin", "videomae", "discovered")
_registered = False


def _register() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(IMPL_NAME, sparsa_attention_forward)
    AttentionMaskInterface.register(IMPL_NAME, sdpa_mask)
    _registered = True


class AttentionController:
    """What `install` attaches: the runner, cross-layer state, and per-layer statistics.

    `layer_stats`: one summary dict per attention call of the last forward (reset at each forward).
    `keep_masks=True` also keeps each call's HDPStats in `last_stats` (for `collect_masks`)."""

    def __init__(self, method: str, opts: dict, keep_masks: bool = False, family: str | None = None):
        self.method = method
        self.opts = dict(opts)
        self.family = family
        self.runner = make_runner(method, family, **opts)
        self.keep_masks = keep_masks
        self.state: dict = {}
        self.layer_stats: list[dict] = []
        self.last_stats: list = []
        self.history: list[list[dict]] = []  # layer_stats of every forward since install / clear()
        self.prev_impl = None
        self.hook = None
        self.warned_weights = False  # output_attentions asked for and told once

    def new_forward(self) -> None:
        self.state = {}
        self.layer_stats = []
        self.last_stats = []
        self.history.append(self.layer_stats)

    def clear(self) -> None:
        self.history = []

    def totals(self) -> dict:
        """Sparsity over every forward since install/clear: block, head and attention sparsity."""
        keys = ("valid_blocks", "kept_blocks", "heads", "pruned_heads", "valid_elements", "kept_elements",
                "int_macs", "frac_macs", "softmax_elements", "pv_macs", "dense_macs")
        tot = {k: 0 for k in keys}
        padded = False
        for fwd in self.history:
            for st in fwd:
                for k in keys:
                    tot[k] += st.get(k, 0)
                padded |= st.get("padded", 0) > 0
        tot["block_sparsity"] = 1 - tot["kept_blocks"] / max(tot["valid_blocks"], 1)
        tot["head_sparsity"] = tot["pruned_heads"] / max(tot["heads"], 1)
        tot["attention_sparsity"] = 1 - tot["kept_elements"] / max(tot["valid_elements"], 1)
        tot["padded_to_block"] = padded
        return tot


def _split_mask(mask: torch.Tensor | None, B: int, N: int):
    """HF attention mask → (valid [B,N] bool, additive float bias or None).

    Bool masks (True = attend) and additive float masks are accepted. A key is invalid where the
    mask forbids it for every query (padding); finite additive values (Swin's bias and its -100
    shift mask) are returned as the bias."""
    if mask is None:
        return torch.ones(B, N, dtype=torch.bool), None
    if mask.dtype == torch.bool:
        m = mask.expand(B, -1, -1, N) if mask.shape[0] == B else mask.expand(B, -1, -1, N)
        valid = m.any(1).any(1)
        return valid, None
    m = mask.to(torch.float32)
    forbidden = m < torch.finfo(torch.float32).min / 2
    if m.shape[0] != B:
        m = m.expand(B, *m.shape[1:])
        forbidden = forbidden.expand(B, *forbidden.shape[1:])
    valid = (~forbidden).reshape(B, -1, N).any(1)
    bias = torch.where(forbidden, torch.zeros((), dtype=m.dtype), m)
    if not bool(bias.any()):
        bias = None
    return valid, bias


def sparsa_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The registered attention function: query/key/value are [B,H,N,D_h]; returns ([B,N,H,D_h], None)."""
    ctrl: AttentionController | None = getattr(module, "_sparsa_ctrl", None)
    if ctrl is None:  # a module of a model that was not installed (shared config): plain SDPA
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    if kwargs.get("output_attentions") and not ctrl.warned_weights:  # as HF's own sdpa does: say so, once
        ctrl.warned_weights = True
        warnings.warn(f"sparsa's {ctrl.method} attention returns no attention weights (output_attentions gives "
                      "None); its kept blocks and heads come from sparsa.attention.collect_masks",
                      UserWarning, stacklevel=2)
    B, H, N, D = query.shape
    if key.shape[2] != N:
        raise SparsaError(f"sparsa attention supports self-attention only: {type(module).__name__} attends "
                          f"{N} queries to {key.shape[2]} keys (cross-attention, or keys pooled / sequence-reduced "
                          "as in SegFormer and PVT)",
                          hint="prune, quantize and simulate it without --attention")
    if scaling is not None and abs(scaling * math.sqrt(D) - 1.0) > 1e-6:
        query = query * (scaling * math.sqrt(D))  # HDP applies 1/√D_h itself
    valid, bias = _split_mask(attention_mask, B, N)
    if bias is not None and bias.shape[1] == 1:
        bias = bias.expand(B, H, N, N)
    with torch.no_grad():
        out, stats = ctrl.runner(query.float(), key.float(), value.float(), valid, bias, ctrl.state)
    summ = stats.summary()
    summ["layer"] = getattr(module, "_sparsa_layer", -1)
    ctrl.layer_stats.append(summ)
    if ctrl.keep_masks:  # masks and head importances; not the element-level tensors (N² per head)
        ctrl.last_stats.append(dataclasses.replace(stats, elem_keep=None, output_int=None))
        if B * H * N * N >= TRIM_SCORES:
            _return_freed_memory()
    return out.to(value.dtype).transpose(1, 2).contiguous(), None


TRIM_SCORES = 2**22  # a layer's emulation this large frees tens of MB in pieces


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def _return_freed_memory() -> None:
    """Hand the heap's freed pages back to the OS (glibc; elsewhere nothing). A long-sequence layer's
    emulation frees its work tensors below glibc's adaptive mmap threshold, where the heap keeps them:
    ~0.2 GB of peak RSS recording VideoMAE-B's 1,568-token masks."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _family_of(model) -> str | None:
    from sparsa.models.families import family_for_module

    if getattr(getattr(model, "config", None), "model_type", None) is None:
        return None
    try:
        return family_for_module(model).name
    except SparsaError:
        return None


def attention_modules(model) -> list:
    """The self-attention modules HDP replaces (the modules that call the attention interface and
    are passed to it as `module`: the family adapter's head groups), in forward order."""
    from sparsa.models.families import FAMILIES

    fam = _family_of(model)
    if fam not in SUPPORTED_FAMILIES:
        return []
    return [model.get_submodule(g.name) for g in FAMILIES[fam].adapter(model).head_groups()]


def _generic_forwards(model) -> dict:
    """{attention module computing its scores itself: its WrapSpec, or why it cannot be wrapped}."""
    from sparsa.models.families import FAMILIES

    if _family_of(model) != "discovered":
        return {}
    return FAMILIES["discovered"].adapter(model).generic_forwards()


def _interface_problem(model) -> str | None:
    """Why a discovered model's attention cannot be routed through sparsa (None: it can)."""
    for name, spec in _generic_forwards(model).items():
        if isinstance(spec, str):
            cls = type(model.get_submodule(name)).__name__
            return (f"{name} ({cls}) computes its attention scores itself instead of calling transformers' "
                    f"attention interface, and sparsa's generic attention forward cannot stand in for it: {spec}")
    return None


def _family(model) -> str:
    fam = _family_of(model)
    if fam == "discovered" and (why := _interface_problem(model)):
        mt = getattr(getattr(model, "config", None), "model_type", None)
        raise SparsaError(f"attention pruning cannot attach to this {mt!r} model: {why}",
                          hint="prune, quantize and simulate it without --attention, or register a family "
                               "(sparsa.models.register_family) whose attention module calls ALL_ATTENTION_FUNCTIONS")
    if fam not in SUPPORTED_FAMILIES or not attention_modules(model):
        mt = getattr(getattr(model, "config", None), "model_type", None)
        raise SparsaError(
            f"attention pruning does not support this model (model_type={mt!r})",
            hint=f"supported families: {', '.join(SUPPORTED_FAMILIES)} (Hugging Face transformers models)",
        )
    return fam


def install(model, method: str = "hdp", *, keep_masks: bool = False, **opts) -> AttentionController:
    """Route every self-attention of `model` through `method` (reversible: see `uninstall`).

    opts are HDPConfig fields (rho_b, tau_h, block, importance, ...) or `ratio` (Top-K / SpAtten
    fraction). Returns the controller; `controller.layer_stats` has one summary per layer of the
    last forward, `controller.totals()` the sparsity over every forward since install."""
    check_method(method)
    family = _family(model)
    if getattr(model, "_sparsa_ctrl", None) is not None:
        uninstall(model)
    _register()
    ctrl = AttentionController(method, opts, keep_masks, family)
    for i, m in enumerate(attention_modules(model)):
        m._sparsa_ctrl = ctrl
        m._sparsa_layer = i
    for name, spec in _generic_forwards(model).items():  # modules computing their scores themselves
        m = model.get_submodule(name)
        if not is_wrapped(m):  # (a pruned one already runs the generic forward)
            wrap(m, spec)
            m._sparsa_wrapped_here = True
        m._sparsa_config = model.config  # the generic forward runs sparsa's function while this names it
        m._sparsa_attention_fn = (IMPL_NAME, sparsa_attention_forward)
    ctrl.prev_impl = model.config._attn_implementation
    _set_impl(model, IMPL_NAME)
    ctrl.hook = model.register_forward_pre_hook(lambda mod, args: ctrl.new_forward())
    model._sparsa_ctrl = ctrl
    return ctrl


def uninstall(model) -> None:
    """Undo `install`: previous attention implementation back, tags and hook removed."""
    ctrl = getattr(model, "_sparsa_ctrl", None)
    if ctrl is None:
        return
    for m in attention_modules(model):
        if m.__dict__.pop("_sparsa_wrapped_here", False):
            unwrap(m)
        for attr in ("_sparsa_ctrl", "_sparsa_layer", "_sparsa_config", "_sparsa_attention_fn"):
            if hasattr(m, attr):
                delattr(m, attr)
    _set_impl(model, ctrl.prev_impl or "sdpa")
    ctrl.hook.remove()
    del model._sparsa_ctrl


def _set_impl(model, name: str) -> None:
    can = getattr(model, "_can_set_attn_implementation", None)
    if can is None or can():  # a model whose attention skips the interface (TimeSformer) would only warn
        try:
            model.set_attn_implementation(name)
        except Exception:  # older/odd models: set the config field directly (what the modules read)
            pass
    for m in model.modules():
        cfg = getattr(m, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation"):
            cfg._attn_implementation = name


def collect_masks(loaded, inputs: dict, method: str = "hdp", **opts) -> list[dict]:
    """Run `loaded.model(**inputs)` with `method` and return one dict per attention layer:

    block_mask BoolTensor[B,H,NB,NB] (True = kept), head_mask BoolTensor[B,H] (True = kept),
    block_size, seq_len, valid_len LongTensor[B], plus the layer's summary (`stats`).
    For Swin, B is batch × windows (attention runs per window). The model is left as it was."""
    model = (loaded if isinstance(loaded, torch.nn.Module) else getattr(loaded, "model", loaded))
    was = getattr(model, "_sparsa_ctrl", None)
    prev = (was.method, was.opts) if was is not None else None
    ctrl = install(model, method, keep_masks=True, **opts)
    try:
        with torch.no_grad():
            model(**inputs)
        out = []
        # the masks are handed over, not copied (the controller's stats go with the uninstall): at
        # 1,568 tokens one layer's mask is 30 MB
        for summ, st in zip(ctrl.layer_stats, ctrl.last_stats):
            out.append(dict(block_mask=st.block_mask, head_mask=st.head_mask.clone(),
                            block_size=st.block_size, seq_len=st.seq_len, valid_len=st.valid_len.clone(),
                            stats=summ))
        return out
    finally:
        uninstall(model)
        if prev is not None:
            install(model, prev[0], **prev[1])
