"""What the simulator runs: an `Op` (a GEMM, softmax, elementwise work or a sparsity-engine step)
and a `Workload` (a list of them). Built by `sparsa.hw.workload` (shapes, masks) and
`sparsa.hw.trace` (a model's own forward pass); read by `sparsa.hw.sim`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

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
    weight_bits: int | None = None  # B is a stored weight this narrow (a quantized layer); None: operand_bits
    # softmax / elementwise: elements processed, rows (softmax), ops per element (elementwise)
    elems: int = 0
    rows: int = 0
    ops_per_elem: int = 1
    # sparsity engine: block importances evaluated, block-rows thresholded, heads decided
    blocks: int = 0
    block_rows: int = 0
    heads: int = 0
    # where it comes from: the module that ran it (traced workloads), and its part in attention
    # ("qk", "softmax", "pv"; with masks "qk_int", "sparsity_engine", "qk_frac"); "" otherwise
    module: str = ""
    role: str = ""

    @property
    def dense_macs(self) -> int:
        return self.m * self.k * self.n * self.count if self.kind == "gemm" else 0

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "kind": self.kind, "layer": self.layer}
        if self.role:
            d["role"] = self.role
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
