"""The operations a (compressed) transformer runs, as the simulator sees them.

A `Workload` is a list of `Op`s: GEMMs (with optional per-block masks: HDP's kept score blocks,
and pruned heads folded into them), softmax, elementwise work and the sparsity engine's own
steps. Build it from a loaded model (`from_model`: the ops its forward pass really runs, traced
by `sparsa.hw.trace`, so pruned models come out smaller and every family is simulated at its real
size, Swin's windows and patch merging included) or from a plain shape description
(`from_shapes`, e.g. BERT-base without loading any weights).

With HDP masks (the output of `sparsa.attention.collect_masks`), attention per layer and head is
(docs/algorithms.md §5.3, §8): the integer pass I_Q.I_K^T over all blocks (always), the sparsity
engine (block importances, row thresholds, head skip), the fractional pass (F_Q.I_K^T + I_Q.F_K^T,
inner dimension 2*D_h) over kept blocks of surviving heads, softmax over kept elements, and P.V
reading only the V rows of kept key blocks (fetch-upon-mask).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from sparsa.errors import SparsaError

from sparsa.hw.ops import Op, OpKind, Workload  # noqa: F401  (OpKind re-exported: the workload API)


@dataclass(frozen=True)
class LayerShape:
    hidden: int  # model width D (input of Q/K/V, output of O and FFN2)
    heads: int  # attention heads kept in this layer
    head_dim: int
    ffn: int  # FFN width kept in this layer


def _layer_ops(i: int, s: LayerShape, seq: int, batch: int, masks: dict | None) -> list[Op]:
    tokens = batch * seq
    qkv = s.heads * s.head_dim
    ops = [
        Op(f"L{i}.q", "gemm", i, tokens, s.hidden, qkv),
        Op(f"L{i}.k", "gemm", i, tokens, s.hidden, qkv),
        Op(f"L{i}.v", "gemm", i, tokens, s.hidden, qkv),
    ]
    if s.heads > 0:
        ops += _attention_ops(i, s, seq, batch, masks)
    ops += [
        Op(f"L{i}.o", "gemm", i, tokens, qkv, s.hidden),
        Op(f"L{i}.add_norm1", "elementwise", i, elems=tokens * s.hidden, ops_per_elem=4),
        Op(f"L{i}.ffn1", "gemm", i, tokens, s.hidden, s.ffn),
        Op(f"L{i}.gelu", "elementwise", i, elems=tokens * s.ffn, ops_per_elem=2),
        Op(f"L{i}.ffn2", "gemm", i, tokens, s.ffn, s.hidden),
        Op(f"L{i}.add_norm2", "elementwise", i, elems=tokens * s.hidden, ops_per_elem=4),
    ]
    return [op for op in ops if op.kind != "gemm" or (op.m and op.k and op.n)]


def _attention_ops(i: int, s: LayerShape, seq: int, batch: int, masks: dict | None) -> list[Op]:
    g = batch * s.heads
    if masks is None:
        return [
            Op(f"L{i}.qk", "gemm", i, seq, s.head_dim, seq, count=g, role="qk"),
            Op(f"L{i}.softmax", "softmax", i, elems=g * seq * seq, rows=g * seq, role="softmax"),
            Op(f"L{i}.pv", "gemm", i, seq, seq, s.head_dim, count=g, role="pv"),
        ]
    heads = _mask_arrays(i, masks)[1].shape[1]
    if heads != s.heads:
        raise SparsaError(
            f"layer {i}: masks cover {heads} heads but the model has {s.heads}",
            hint="collect the masks on the same (pruned) model that is simulated",
        )
    return masked_attention_ops(f"L{i}", i, s.head_dim, s.head_dim, masks)


def _mask_arrays(layer, masks: dict) -> tuple[np.ndarray, np.ndarray]:
    bm = np.asarray(masks["block_mask"], dtype=bool)
    hm = np.asarray(masks["head_mask"], dtype=bool)
    if bm.ndim != 4 or hm.ndim != 2 or bm.shape[:2] != hm.shape:
        raise SparsaError(
            f"layer {layer}: masks have shapes block_mask {bm.shape}, head_mask {hm.shape}",
            hint="expected block_mask [B,H,NB,NB] and head_mask [B,H] as returned by sparsa.attention.collect_masks",
        )
    return bm, hm


def masked_attention_ops(prefix: str, layer: int | None, head_dim: int, v_dim: int, masks: dict,
                         module: str = "") -> list[Op]:
    """One attention call under recorded block/head masks (B x H score matrices of NB x NB blocks;
    for Swin B is batch x windows): integer pass, sparsity engine, fractional pass, softmax, P.V."""
    bm, hm = _mask_arrays(layer, masks)
    b = int(masks["block_size"])
    g = bm.shape[0] * bm.shape[1]
    nb = bm.shape[2]
    seq_m = nb * b  # the padded length the masks were computed on
    # every head kept (no head threshold): the recorded masks themselves, not a copy per layer
    kept = bm.reshape(g, nb, nb) if hm.all() else (bm & hm[:, :, None, None]).reshape(g, nb, nb)
    # Q3.4 (docs/algorithms.md §5.1): integer parts I = q >> f have 1 + m = 4 bits, fractional parts F have f = 4 bits
    int_bits = int(masks.get("int_bits", 4))
    frac_bits = int(masks.get("frac_bits", 4))
    kept_elems = int(kept.sum()) * b * b
    live_rows = int(hm.sum()) * seq_m
    return [
        # integer pass over every block of every head (decides the masks): docs/algorithms.md §5.1 step 3
        Op(f"{prefix}.qk_int", "gemm", layer, seq_m, head_dim, seq_m, count=g, operand_bits=int_bits,
           module=module, role="qk_int"),
        Op(f"{prefix}.sparsity_engine", "sparsity_engine", layer, blocks=g * nb * nb, block_rows=g * nb, heads=g,
           block=b, module=module, role="sparsity_engine"),
        # fractional pass F_Q.I_K^T + I_Q.F_K^T on kept blocks of kept heads: inner dim 2*D_h
        Op(f"{prefix}.qk_frac", "gemm", layer, seq_m, 2 * head_dim, seq_m, count=g, out_mask=kept, block=b,
           operand_bits=max(int_bits, frac_bits), module=module, role="qk_frac"),
        Op(f"{prefix}.softmax", "softmax", layer, elems=kept_elems, rows=live_rows, module=module, role="softmax"),
        # P.V: only V rows of kept key blocks are fetched and multiplied (fetch-upon-mask)
        Op(f"{prefix}.pv", "gemm", layer, seq_m, seq_m, v_dim, count=g, inner_mask=kept, block=b, module=module,
           role="pv"),
    ]


def from_shapes(
    layers: list[LayerShape] | None = None,
    *,
    num_layers: int = 12,
    hidden: int = 768,
    heads: int = 12,
    head_dim: int | None = None,
    ffn: int = 3072,
    seq_len: int = 128,
    batch: int = 1,
    masks: list[dict] | None = None,
    name: str = "shapes",
) -> Workload:
    """A workload from shapes alone (no weights): uniform layers, or an explicit per-layer list."""
    if layers is None:
        hd = head_dim or hidden // heads
        layers = [LayerShape(hidden, heads, hd, ffn)] * num_layers
    for v, what in ((seq_len, "seq_len"), (batch, "batch")):
        if v <= 0:
            raise SparsaError(f"{what}={v} must be positive", hint=f"give a positive {what}")
    if masks is not None and len(masks) != len(layers):
        raise SparsaError(
            f"{len(masks)} mask entries for {len(layers)} layers",
            hint="pass one mask dict per attention layer (sparsa.attention.collect_masks output)",
        )
    ops: list[Op] = []
    for i, s in enumerate(layers):
        ops += _layer_ops(i, s, seq_len, batch, None if masks is None else masks[i])
    meta = {"layers": len(layers), "attention": "dense" if masks is None else "masked"}
    return Workload(name, ops, seq_len, batch, meta)


def layer_shapes(loaded) -> list[LayerShape]:
    """Per-layer kept heads / head_dim / FFN width of a loaded (possibly pruned) transformer."""
    adapter = loaded.adapter
    try:
        hgroups, fgroups = adapter.head_groups(), adapter.ffn_groups()
    except (AttributeError, NotImplementedError):
        hgroups, fgroups = [], []
    if not hgroups:
        raise SparsaError(
            f"model family {loaded.family!r} has no attention layers the simulator can read",
            hint="layer shapes are read from transformer encoders only; from_model traces any model sparsa loads",
        )
    model = loaded.model
    out = []
    for hg, fg in zip(hgroups, fgroups):
        q = model.get_submodule(hg.q)
        fc1 = model.get_submodule(fg.fc1)  # (a gated fc1 holding both halves: twice the FFN's width)
        out.append(LayerShape(hidden=int(q.in_features), heads=int(hg.num_heads), head_dim=int(hg.head_dim),
                              ffn=int(fc1.out_features) // fg.halves))
    return out


def _blocks(loaded) -> tuple[list[str], list[str]]:
    """The attention modules and the transformer layers (blocks) holding them, as module names."""
    adapter = loaded.adapter
    try:
        hgroups, fgroups = adapter.head_groups(), adapter.ffn_groups()
    except (AttributeError, NotImplementedError):
        return [], []
    attn = [g.name for g in hgroups]
    if len(fgroups) == len(hgroups):  # an FFN group is named by its layer
        return attn, [g.name for g in fgroups]
    return attn, [g.name.rsplit(".", 1)[0] for g in hgroups]


def _trace_inputs(loaded, seq_len: int | None, masks: list[dict] | None, batch: int) -> dict:
    if loaded.modality == "text":
        if masks and seq_len is None:  # the length and batch the masks were recorded at
            seq_len = int(np.asarray(masks[0]["valid_len"]).max()) if "valid_len" in masks[0] else int(masks[0]["seq_len"])
            batch = int(np.asarray(masks[0]["head_mask"]).shape[0])
        return loaded.example_inputs(batch=batch, seq_len=seq_len)
    if seq_len is not None:
        raise SparsaError(f"seq_len={seq_len} applies to text models; {loaded.family} takes {loaded.modality} input of the "
                          "size in its config", hint="leave --seq-len out for image and video models")
    return loaded.example_inputs(batch=batch)


def _name(loaded) -> str:
    return str(loaded.record.get("source", loaded.family)) if isinstance(loaded.record, dict) else loaded.family


def trace_loaded(loaded, inputs: dict):
    """One traced forward pass of a loaded model on `inputs` (`sparsa.hw.trace.Trace`): pass it to
    `from_model(..., trace=)` to build the dense and the masked workload without tracing twice."""
    from sparsa.hw.trace import trace_model

    attn, blocks = _blocks(loaded)
    with _plain_attention(loaded.model):
        return trace_model(loaded.model, inputs, attention_modules=attn, blocks=blocks, what=_name(loaded))


def from_model(loaded, seq_len: int | None = None, masks: list[dict] | None = None, batch: int = 1,
               inputs: dict | None = None, trace=None) -> Workload:
    """The workload a loaded model runs on `inputs` (default: its example inputs at `seq_len` tokens
    for text, its configured image/video size otherwise, `batch` inputs), traced from its forward
    pass (`sparsa.hw.trace`); with `masks` (`sparsa.attention.collect_masks` on the same inputs) each
    attention call runs under its recorded block and head masks. `trace`: a `trace_loaded(loaded,
    inputs)` of the same model and inputs to reuse (tracing costs far more than simulating)."""
    if trace is not None and inputs is None:
        raise SparsaError("from_model(trace=...) needs the inputs the trace was made on",
                          hint="pass inputs=, the same dict given to trace_loaded")
    if inputs is None:
        inputs = _trace_inputs(loaded, seq_len, masks, batch)
    _, blocks = _blocks(loaded)
    name = _name(loaded)
    tr = trace if trace is not None else trace_loaded(loaded, inputs)
    ops = tr.ops
    if masks is not None:
        ops = _attach_masks(tr, masks)
    first = next(iter(inputs.values()))
    batch = int(first.shape[0]) if hasattr(first, "shape") and first.dim() else 1
    if loaded.modality == "text":
        seq = int(masks[0]["seq_len"]) if masks else int(first.shape[-1])
    elif tr.attention:  # tokens entering the first attention layer (Swin: all windows)
        qk = tr.ops[tr.attention[0]["qk"]]
        heads = _heads_of(loaded, tr.attention[0]["module"])
        seq = qk.m * qk.count // (batch * heads) if heads and qk.count % (batch * heads) == 0 else qk.m
    else:
        seq = 0
    meta: dict[str, Any] = {"family": loaded.family, "traced": True, "input": tr.meta["input"],
                            "layers": len(blocks), "attention": "dense" if masks is None else "masked",
                            "attention_calls": len(tr.attention), "flop_counter_macs": tr.flop_counter_macs,
                            "not_simulated": tr.not_simulated}
    try:  # one entry per attention module and per FFN, as `sparsa info` lists them (TimeSformer: two attentions a layer)
        hgroups, fgroups = loaded.adapter.head_groups(), loaded.adapter.ffn_groups()
        meta.update(heads_per_layer=[int(g.num_heads) for g in hgroups],
                    ffn_per_layer=[int(g.size) for g in fgroups])
    except (AttributeError, NotImplementedError, SparsaError):  # no attention layers (a CNN): the trace has every op
        pass
    return Workload(name, ops, seq, batch, meta)


@contextmanager
def _plain_attention(model):
    """With dynamic attention installed the model runs sparsa's software emulation of it (fixed-point
    parts, importances, thresholds): trace the attention it stands for instead; the recorded masks
    say what the hardware skips. The controller's statistics are left as they were."""
    ctrl = getattr(model, "_sparsa_ctrl", None)
    if ctrl is None:
        yield
        return
    from sparsa.attention.install import IMPL_NAME, _set_impl

    kept = (ctrl.layer_stats, ctrl.last_stats, list(ctrl.history))
    _set_impl(model, ctrl.prev_impl or "sdpa")
    try:
        yield
    finally:
        _set_impl(model, IMPL_NAME)
        ctrl.layer_stats, ctrl.last_stats, ctrl.history = kept


def _heads_of(loaded, module: str) -> int | None:
    try:
        return next((g.num_heads for g in loaded.adapter.head_groups() if g.name == module), None)
    except (AttributeError, NotImplementedError):
        return None


def _attach_masks(tr, masks: list[dict]) -> list[Op]:
    """Replace each traced attention call's Q.K^T, softmax, P.V by the masked ops of its masks."""
    if len(masks) != len(tr.attention):
        raise SparsaError(
            f"{len(masks)} mask entries for the {len(tr.attention)} attention calls the model makes",
            hint="collect the masks (sparsa.attention.collect_masks) on the same model and input that is simulated",
        )
    replace: dict[int, list[Op]] = {}
    drop: set[int] = set()
    for i, (call, mk) in enumerate(zip(tr.attention, masks)):
        qk, pv = tr.ops[call["qk"]], tr.ops[call["pv"]]
        bm, _ = _mask_arrays(call["layer"], mk)
        g = bm.shape[0] * bm.shape[1]
        padded = bm.shape[2] * int(mk["block_size"])
        if g != qk.count or qk.m != qk.n or not qk.m <= padded < qk.m + int(mk["block_size"]):
            raise SparsaError(
                f"attention call {i} ({call['module']}): masks cover {bm.shape[0]}x{bm.shape[1]} score matrices of "
                f"{padded} tokens, the model computes {qk.count} of {qk.m}x{qk.n}",
                hint="collect the masks on the same (pruned) model and input that is simulated",
            )
        prefix = qk.name.rsplit(".", 1)[0]
        replace[call["qk"]] = masked_attention_ops(prefix, qk.layer, qk.k, pv.n, mk, module=call["module"])
        drop.update(j for j in (call["softmax"], call["pv"]) if j is not None)
    out: list[Op] = []
    for j, op in enumerate(tr.ops):
        if j in replace:
            out += replace[j]
        elif j not in drop:
            out.append(op)
    return out


def synthetic_masks(
    num_layers: int, heads: int, seq_len: int, *, block: int = 2, block_keep: float = 0.3,
    head_keep: float = 0.85, batch: int = 1, seed: int = 0,
) -> list[dict]:
    """Random per-head block masks in the `collect_masks` format (for sweeps and benches)."""
    rng = np.random.default_rng(seed)
    nb = math.ceil(seq_len / block)
    out = []
    for _ in range(num_layers):
        bm = rng.random((batch, heads, nb, nb)) < block_keep
        bm[..., np.arange(nb), rng.integers(0, nb, nb)] = True  # every block-row keeps >= 1 block
        hm = rng.random((batch, heads)) < head_keep
        out.append({"block_mask": bm, "head_mask": hm, "block_size": block, "seq_len": nb * block,
                    "valid_len": np.full(batch, seq_len)})
    return out
