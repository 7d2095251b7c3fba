"""The operations a (compressed) transformer runs, as the simulator sees them.

A `Workload` is a list of `Op`s: GEMMs (with optional per-block masks: HDP's kept score blocks,
and pruned heads folded into them), softmax, elementwise work and the sparsity engine's own
steps. Build it from a loaded model (`from_model`, reads the real per-layer head counts and
Linear shapes, so pruned models come out smaller) or from a plain shape description
(`from_shapes`, e.g. BERT-base without loading any weights).

With HDP masks (the output of `sparsa.attention.collect_masks`), attention per layer and head is
(docs/algorithms.md §5.3, §8): the integer pass I_Q.I_K^T over all blocks (always), the sparsity
engine (block importances, row thresholds, head skip), the fractional pass (F_Q.I_K^T + I_Q.F_K^T,
inner dimension 2*D_h) over kept blocks of surviving heads, softmax over kept elements, and P.V
reading only the V rows of kept key blocks (fetch-upon-mask).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from sparsa.errors import SparsaError

OpKind = Literal["gemm", "softmax", "elementwise", "sparsity_engine"]


@dataclass
class Op:
    name: str
    kind: OpKind
    layer: int | None = None
    # gemm: C[m,n] = A[m,k] . B[k,n], `count` independent copies (batch x heads)
    m: int = 0
    k: int = 0
    n: int = 0
    count: int = 1
    # kept output blocks [count, ceil(m/block), ceil(n/block)] (True = computed), or None = dense
    out_mask: np.ndarray | None = None
    # kept inner blocks per output row block [count, ceil(m/block), ceil(k/block)] (P.V: key blocks)
    inner_mask: np.ndarray | None = None
    block: int = 1
    operand_bits: int | None = None  # None: the architecture's operand width
    # softmax / elementwise: elements processed, rows (softmax), ops per element (elementwise)
    elems: int = 0
    rows: int = 0
    ops_per_elem: int = 1
    # sparsity engine: block importances evaluated, block-rows thresholded, heads decided
    blocks: int = 0
    block_rows: int = 0
    heads: int = 0

    @property
    def dense_macs(self) -> int:
        return self.m * self.k * self.n * self.count if self.kind == "gemm" else 0

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "kind": self.kind, "layer": self.layer}
        if self.kind == "gemm":
            d.update(m=self.m, k=self.k, n=self.n, count=self.count, masked=self.out_mask is not None or self.inner_mask is not None)
        elif self.kind == "sparsity_engine":
            d.update(blocks=self.blocks, block_rows=self.block_rows, heads=self.heads)
        else:
            d.update(elems=self.elems, rows=self.rows)
        return d


@dataclass
class Workload:
    name: str
    ops: list[Op]
    seq_len: int
    batch: int = 1
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def dense_macs(self) -> int:
        return sum(op.dense_macs for op in self.ops)

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "seq_len": self.seq_len, "batch": self.batch, "ops": len(self.ops),
                "gemm_macs_dense": self.dense_macs, **self.meta}


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
            Op(f"L{i}.qk", "gemm", i, seq, s.head_dim, seq, count=g),
            Op(f"L{i}.softmax", "softmax", i, elems=g * seq * seq, rows=g * seq),
            Op(f"L{i}.pv", "gemm", i, seq, seq, s.head_dim, count=g),
        ]
    bm, hm, b = masks["block_mask"], masks["head_mask"], int(masks["block_size"])
    bm = np.asarray(bm, dtype=bool)
    hm = np.asarray(hm, dtype=bool)
    if bm.ndim != 4 or hm.ndim != 2 or bm.shape[:2] != hm.shape:
        raise SparsaError(
            f"layer {i}: masks have shapes block_mask {bm.shape}, head_mask {hm.shape}",
            hint="expected block_mask [B,H,NB,NB] and head_mask [B,H] as returned by sparsa.attention.collect_masks",
        )
    if bm.shape[1] != s.heads:
        raise SparsaError(
            f"layer {i}: masks cover {bm.shape[1]} heads but the model has {s.heads}",
            hint="collect the masks on the same (pruned) model that is simulated",
        )
    nb = bm.shape[2]
    seq_m = nb * b  # the padded length the masks were computed on
    kept = (bm & hm[:, :, None, None]).reshape(g, nb, nb)
    # Q3.4 (docs/algorithms.md §5.1): integer parts I = q >> f have 1 + m = 4 bits, fractional parts F have f = 4 bits
    int_bits = int(masks.get("int_bits", 4))
    frac_bits = int(masks.get("frac_bits", 4))
    kept_elems = int(kept.sum()) * b * b
    live_rows = int(hm.sum()) * seq_m
    return [
        # integer pass over every block of every head (decides the masks): docs/algorithms.md §5.1 step 3
        Op(f"L{i}.qk_int", "gemm", i, seq_m, s.head_dim, seq_m, count=g, operand_bits=int_bits),
        Op(f"L{i}.sparsity_engine", "sparsity_engine", i, blocks=g * nb * nb, block_rows=g * nb, heads=g, block=b),
        # fractional pass F_Q.I_K^T + I_Q.F_K^T on kept blocks of kept heads: inner dim 2*D_h
        Op(f"L{i}.qk_frac", "gemm", i, seq_m, 2 * s.head_dim, seq_m, count=g, out_mask=kept, block=b,
           operand_bits=max(int_bits, frac_bits)),
        Op(f"L{i}.softmax", "softmax", i, elems=kept_elems, rows=live_rows),
        # P.V: only V rows of kept key blocks are fetched and multiplied (fetch-upon-mask)
        Op(f"L{i}.pv", "gemm", i, seq_m, seq_m, s.head_dim, count=g, inner_mask=kept, block=b),
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
            hint="the simulator models transformer encoders (bert, vit, videomae); use sparsa.hw.sim.simulate_gemm for other layers",
        )
    model = loaded.model
    out = []
    for hg, fg in zip(hgroups, fgroups):
        q = model.get_submodule(hg.q)
        fc1 = model.get_submodule(fg.fc1)
        out.append(LayerShape(hidden=int(q.in_features), heads=int(hg.num_heads), head_dim=int(hg.head_dim),
                              ffn=int(fc1.out_features)))
    return out


def _tokens_for(loaded, seq_len: int | None) -> int:
    if seq_len is not None:
        return int(seq_len)
    if loaded.modality == "text":  # 128, or the model's position limit if shorter
        return loaded.adapter.default_seq_len()
    inputs = loaded.example_inputs(batch=1)
    cfg = loaded.config
    image = getattr(cfg, "image_size", None)
    patch = getattr(cfg, "patch_size", None)
    if image and patch:
        img = image if isinstance(image, int) else image[0]
        pt = patch if isinstance(patch, int) else patch[0]
        frames = getattr(cfg, "num_frames", 1) // getattr(cfg, "tubelet_size", 1)
        patches = max(1, frames) * (img // pt) ** 2
        if loaded.family != "vit":
            return patches
        # ViT adds [CLS], DeiT [CLS] + distillation: the learned position table has one row per token
        pos = next((p for n, p in loaded.model.named_parameters() if n.endswith("embeddings.position_embeddings")), None)
        return int(pos.shape[1]) if pos is not None and pos.dim() == 3 and pos.shape[1] > patches else patches + 1
    raise SparsaError(
        f"cannot infer the token count of a {loaded.family!r} model (inputs {sorted(inputs)})",
        hint="pass seq_len explicitly (--seq-len)",
    )


def from_model(loaded, seq_len: int | None = None, masks: list[dict] | None = None, batch: int = 1) -> Workload:
    """The workload of a loaded model at `seq_len` tokens, with optional per-layer attention masks."""
    shapes = layer_shapes(loaded)
    if masks is not None:
        seq_from_masks = int(masks[0].get("seq_len", 0)) if masks else 0
        batch = int(np.asarray(masks[0]["head_mask"]).shape[0]) if masks else batch
        seq_len = seq_len or seq_from_masks or None
    seq = _tokens_for(loaded, seq_len)
    name = str(loaded.record.get("source", loaded.family)) if isinstance(loaded.record, dict) else loaded.family
    w = from_shapes(shapes, seq_len=seq, batch=batch, masks=masks, name=name)
    w.meta.update(family=loaded.family, heads_per_layer=[s.heads for s in shapes],
                  ffn_per_layer=[s.ffn for s in shapes])
    return w


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
