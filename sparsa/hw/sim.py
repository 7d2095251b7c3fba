"""Cycle-level simulation of a workload on an architecture, vectorised per tile.

`simulate(workload, arch)` -> `SimResult` (per op and in total: cycles, latency, utilisation,
DRAM/SRAM traffic, energy, area; `.to_dict()`); `simulate_gemm(M, K, N, arch)` for one GEMM.

Dense GEMMs follow SCALE-Sim v3 exactly (see `gemm_model`); masked GEMMs skip the folds (tiles)
whose blocks are all pruned, or, with a block-granular sparsity engine (HDP's fetch-upon-mask),
pack the kept blocks of each row stripe into full tiles; P.V streams only the V rows of kept key
blocks. Energy is sum(count * energy per event) over the counted events, exactly.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from sparsa.errors import SparsaError
from sparsa.hw.arch import Arch, load_arch
from sparsa.hw.folds import Folds
from sparsa.hw.gemm_model import ReadBufferModel, fold_geometry, operand_streams, per_fold_cycles, window_points
from sparsa.hw.workload import Op, Workload

# an op (or layer) is memory-bound when DRAM stalls add more than this fraction to its compute cycles
MEMORY_BOUND_STALL = 0.05
ATTENTION_OPS = ("qk", "qk_int", "qk_frac", "softmax", "pv", "sparsity_engine")
INT64_MAX = 2**63 - 1  # cycle and MAC counts are int64 in numpy and in the JSON readers downstream
ENERGY_KEYS = ("mac", "sram_read_byte", "sram_write_byte", "dram_byte", "softmax_elem", "vector_elem", "se_block")


@dataclass
class OpResult:
    name: str
    kind: str
    layer: int | None
    cycles: int  # compute + stall cycles this op occupies the machine
    compute_cycles: int
    stall_cycles: int
    bound: str  # "compute" | "memory"
    macs: int = 0  # MACs performed
    dense_macs: int = 0  # MACs of the same op without any mask
    folds: int = 0  # array tiles run (all copies, all cores)
    folds_dense: int = 0
    dram_bytes: float = 0.0
    sram_read_bytes: float = 0.0
    sram_write_bytes: float = 0.0
    counts: dict[str, float] = field(default_factory=dict)
    energy_pj: float = 0.0
    area_mm2: float = 0.0
    utilisation: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)
    # what of the op's compression (its layer's annotation, its masks) the architecture turned into
    # fewer cycles or bytes, and what it did not, each with the reason
    exploited: list[str] = field(default_factory=list)
    not_exploited: list[str] = field(default_factory=list)


@dataclass
class SimResult:
    arch: str
    workload: str
    clock_hz: float
    ops: list[OpResult]
    counts: dict[str, float]
    energy_table_pj: dict[str, float]
    area_mm2: dict[str, float]
    placeholder_arch: bool
    exploits: dict[str, bool] = field(default_factory=dict)  # Arch.exploit_summary()

    @property
    def cycles(self) -> int:
        return int(sum(o.cycles for o in self.ops))

    @property
    def latency_s(self) -> float:
        return self.cycles / self.clock_hz

    @property
    def energy_pj(self) -> float:
        return float(sum(self.counts[k] * self.energy_table_pj[k] for k in ENERGY_KEYS))

    @property
    def dram_bytes(self) -> float:
        return float(sum(o.dram_bytes for o in self.ops))

    @property
    def macs(self) -> int:
        return int(sum(o.macs for o in self.ops))

    @property
    def stall_cycles(self) -> int:
        return int(sum(o.stall_cycles for o in self.ops))

    def utilisation(self, macs_per_cycle: int) -> float:
        """Busy fraction of the array: full-width MAC slots used over slots available. A split
        multiplier's narrow products fill one slot together, so they count as the slots they take."""
        return self.counts["mac"] / max(1, self.cycles * macs_per_cycle)

    def per_layer(self) -> list[dict[str, Any]]:
        layers: dict[int, dict[str, Any]] = {}
        for o in self.ops:
            if o.layer is None:
                continue
            d = layers.setdefault(o.layer, {"layer": o.layer, "cycles": 0, "compute_cycles": 0, "stall_cycles": 0,
                                            "attention_cycles": 0, "macs": 0, "dense_macs": 0, "dram_bytes": 0.0,
                                            "energy_pj": 0.0, "memory_bound_ops": []})
            d["cycles"] += o.cycles
            if o.name.rsplit(".", 1)[-1] in ATTENTION_OPS:
                d["attention_cycles"] += o.cycles
            d["compute_cycles"] += o.compute_cycles
            d["stall_cycles"] += o.stall_cycles
            d["macs"] += o.macs
            d["dense_macs"] += o.dense_macs
            d["dram_bytes"] += o.dram_bytes
            d["energy_pj"] += o.energy_pj
            if o.bound == "memory":
                d["memory_bound_ops"].append(o.name.split(".", 1)[-1])
        out = []
        for d in layers.values():
            d["bound"] = "memory" if d["stall_cycles"] > MEMORY_BOUND_STALL * max(1, d["compute_cycles"]) else "compute"
            d["stall_fraction"] = d["stall_cycles"] / max(1, d["cycles"])
            out.append(d)
        return out

    def to_dict(self, per_op: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "arch": self.arch, "workload": self.workload, "placeholder_arch": self.placeholder_arch,
            "cycles": self.cycles, "stall_cycles": self.stall_cycles, "latency_s": self.latency_s,
            "macs": self.macs, "dram_bytes": self.dram_bytes, "energy_pj": self.energy_pj,
            "counts": dict(self.counts), "energy_table_pj": dict(self.energy_table_pj), "area_mm2": dict(self.area_mm2),
            "exploits": dict(self.exploits),
        }
        if per_op:
            d["ops"] = [asdict(o) for o in self.ops]
            d["layers"] = self.per_layer()
        return d


# ---- helpers ----------------------------------------------------------------------------------


def _group_any(mask: np.ndarray, axis: int, block: int, fold: int) -> np.ndarray:
    """Reduce a block mask along `axis` to folds of `fold` elements: True if any block in the fold."""
    if fold % block == 0:
        per = fold // block
        m = mask
    else:  # fold not a whole number of blocks: go through elements
        m = np.repeat(mask, block, axis=axis)
        per = fold
    return _split_axis(m, axis, per).any(axis=axis + 1)


def _group_sum(mask: np.ndarray, axis: int, block: int, fold: int) -> np.ndarray:
    per = max(1, fold // block)
    return _split_axis(mask, axis, per).sum(axis=axis + 1, dtype=np.int64)  # counted in int64, not widened first


def _split_axis(m: np.ndarray, axis: int, per: int) -> np.ndarray:
    """Zero-pad `axis` to a multiple of `per` and split it into (groups, per)."""
    pad = (-m.shape[axis]) % per
    if pad:
        widths = [(0, 0)] * m.ndim
        widths[axis] = (0, pad)
        m = np.pad(m, widths)
    shape = list(m.shape)
    shape[axis : axis + 1] = [shape[axis] // per, per]
    return m.reshape(shape)


# ---- GEMM -------------------------------------------------------------------------------------


def _packing(op: Op, arch: Arch) -> int:
    """Narrow products one MAC computes per cycle (split multipliers), 1 otherwise."""
    bits = op.operand_bits or arch.bits.operand_bits
    bits = max(bits, op.weight_bits or bits)  # both operands must be narrow to share a multiplier
    if not arch.bits.split_multipliers or bits * 2 > arch.bits.operand_bits or op.inner_mask is not None:
        return 1  # (an inner-dimension mask indexes K itself: those products are not packed)
    return (arch.bits.operand_bits // bits) ** 2


def _skips_zeros(op: Op, arch: Arch) -> bool:
    return arch.exploits.weight_zero_skipping and op.weight_density < 1.0 and op.inner_mask is None


def _run_k(op: Op, arch: Arch) -> int:
    """The inner dimension the array really steps through: the non-zero weights' share of K (times
    the lanes' imbalance) when zeros are skipped, then `pack` narrow products per MAC per step."""
    k = op.k
    if _skips_zeros(op, arch):
        k = max(1, math.ceil(k * min(1.0, op.weight_density * (1 + arch.exploits.zero_skip_overhead))))
    return -(-k // _packing(op, arch))


def _stored_weight_bytes(op: Op, arch: Arch, wword: float) -> float:
    """Bytes fetched per weight element: dense, or (compressed storage) the non-zeros plus their index."""
    if not arch.exploits.compressed_weight_storage or op.weight_density >= 1.0:
        return wword
    ex = arch.exploits
    index = 1 / 8 if ex.index_format == "bitmap" else op.weight_density * ex.index_bits / 8
    return min(wword, wword * op.weight_density + index)


def _gemm_folds(op: Op, arch: Arch) -> tuple[Folds, int, float]:
    """The folds run (all copies; a histogram of per-fold cycles), MACs performed, and kept fraction
    of operand traffic."""
    k_run = _run_k(op, arch)
    if k_run != op.k:  # narrow products packed and/or zero weights skipped: the array steps k_run
        folds, macs, kept = _gemm_folds(Op(op.name, op.kind, op.layer, op.m, k_run, op.n, count=op.count,
                                           out_mask=op.out_mask, block=op.block), arch)
        macs = macs // k_run * op.k
    else:
        folds, macs, kept = _gemm_folds_dense_k(op, arch)
    if _skips_zeros(op, arch):  # products with a zero weight are not performed
        macs = round(macs * op.weight_density)
    return folds, macs, kept


def _gemm_folds_dense_k(op: Op, arch: Arch) -> tuple[Folds, int, float]:
    r, c, df = arch.array.rows, arch.array.cols, arch.array.dataflow
    g = fold_geometry(op.m, op.k, op.n, r, c, df)
    b = op.block
    se = arch.sparsity_engine
    use_masks = se.present and (op.out_mask is not None or op.inner_mask is not None)
    if not use_masks:
        return Folds.uniform(g.per_fold, g.row_folds * g.col_folds * op.count), op.m * op.k * op.n * op.count, 1.0
    if op.out_mask is not None:
        mask = np.asarray(op.out_mask, dtype=bool)  # [G, m-blocks, n-blocks]
        macs = int(np.count_nonzero(mask)) * b * b * op.k
        if df == "os":
            if se.skip == "block":
                per_tile = max(1, (r // b) * (c // b))
                # kept blocks per row first (bytes summed into uint16 where a row's count fits), then per fold
                narrow = mask.shape[2] < 2**16
                per_row = (mask.view(np.uint8) if narrow else mask).sum(axis=2, dtype=np.uint16 if narrow else np.int64)
                kept_blocks = _group_sum(per_row.astype(np.int64), 1, b, r)  # [G, row folds]
                tiles = -(-kept_blocks // per_tile)
                n_tiles = int(tiles.sum())
                return Folds.uniform(g.per_fold, n_tiles), macs, n_tiles / max(1, g.row_folds * g.col_folds * op.count)
            tiles = _group_any(_group_any(mask, 1, b, r), 2, b, c)  # [G, row folds, col folds]
            return Folds.uniform(g.per_fold, int(tiles.sum())), macs, float(tiles.mean())
        # ws / is: the output rows of M (ws) or columns of N (is) are streamed; skip unneeded ones
        if df == "ws":
            cols_any = _group_any(mask, 2, b, c)  # [G, m-blocks, n folds]
            t_eff = np.minimum(cols_any.sum(axis=1) * b, op.m)  # [G, n folds]
        else:
            rows_any = _group_any(mask, 1, b, c)  # is: columns of the array hold M
            t_eff = np.minimum(rows_any.sum(axis=2) * b, op.n)  # [G, m folds]
        # each (copy, streamed fold) runs once per row fold
        return Folds.of(per_fold_cycles(t_eff, r, c, df), g.row_folds), macs, float((t_eff > 0).mean())
    mask = np.asarray(op.inner_mask, dtype=bool)  # [G, m-blocks, k-blocks]
    macs = int(np.count_nonzero(mask)) * b * b * op.n
    if df == "os":
        union = _group_any(mask, 1, b, r)  # [G, row folds, k-blocks]
        t_eff = np.minimum(union.sum(axis=2) * b, op.k)  # [G, row folds]
        folds = Folds.of(per_fold_cycles(t_eff, r, c, df), g.col_folds)
        return folds, macs, float(t_eff.sum() / max(1, op.k * t_eff.size))
    if df == "ws":  # array holds (k, n): a k-fold is needed by the m rows that keep any of its blocks
        need = _group_any(mask, 2, b, r)  # [G, m-blocks, k folds]
        t_eff = np.minimum(need.sum(axis=1) * b, op.m)  # [G, k folds]
        return Folds.of(per_fold_cycles(t_eff, r, c, df), g.col_folds), macs, float((t_eff > 0).mean())
    tiles = _group_any(_group_any(mask, 2, b, r), 1, b, c)  # is: array holds (k, m)
    return Folds.uniform(g.per_fold, int(tiles.sum())), macs, float(tiles.mean())


def _memory_scalesim(op: Op, arch: Arch, g, compute: int, word: float, out_word: float, kept_frac: float,
                     wword: float | None = None):
    """SCALE-Sim's double-buffered scratchpads (window of sets; see gemm_model). `wword`: bytes per
    filter (weight) element when weights are stored narrower than the activations."""
    wword = wword or word
    r, c, df = arch.array.rows, arch.array.cols, arch.array.dataflow
    ifs, fls, writes = operand_streams(g, op.m, op.k, op.n, r, c, df)
    bufs = arch.buffers
    rb_i = ReadBufferModel(int(bufs.ifmap_kb * 1024 // word), bufs.active_fraction)
    rb_f = ReadBufferModel(int(bufs.filter_kb * 1024 // wword), bufs.active_fraction)
    bw = arch.dram.bandwidth_bytes_per_cycle
    if bw is not None:  # the exact window walk only matters when DRAM time can stall the array
        ev_i = rb_i.events(ifs, window_points(g, op.m, op.k, op.n, r, c, df, "ifmap", rb_i.max_walk_points))
        ev_f = rb_f.events(fls, window_points(g, op.m, op.k, op.n, r, c, df, "filter", rb_f.max_walk_points))
    else:
        ev_i, ev_f = rb_i.events(ifs), rb_f.events(fls)
    n_writes = writes * op.count * (kept_frac if op.out_mask is not None else 1.0)
    traffic = {
        "ifmap": rb_i.dram_elems(ifs, ev_i) * word * op.count * kept_frac,
        "filter": rb_f.dram_elems(fls, ev_f) * wword * op.count * kept_frac,
        "ofmap": n_writes * out_word,
    }
    detail: dict[str, Any] = {"prefetches": {"ifmap": ev_i, "filter": ev_f}}
    if bw is None:
        return traffic, n_writes, 0, detail
    words_bw = bw / word
    t_i = rb_i.dram_cycles(ev_i, words_bw) * op.count * kept_frac
    t_f = rb_f.dram_cycles(ev_f, bw / wword) * op.count * kept_frac
    ofmap_elems = int(bufs.ofmap_kb * 1024 // out_word)
    t_o = n_writes / (bw / out_word) if n_writes > ofmap_elems else 0.0
    t_mem = max(t_i, t_f, t_o) if arch.dram.per_interface else t_i + t_f + t_o
    detail["dram_cycles"] = {"ifmap": t_i, "filter": t_f, "ofmap": t_o}
    return traffic, n_writes, max(0, int(math.ceil(t_mem - compute))), detail


def _memory_tiles(op: Op, arch: Arch, g, compute: int, word: float, out_word: float, kept_frac: float,
                  wword: float | None = None):
    """Double-buffered tiles: a fold's operand slices are prefetched during the previous fold; a
    slice is fetched again only when the operand does not fit on chip. The cheaper loop order wins."""
    df, bufs = arch.array.dataflow, arch.buffers
    cap_i = bufs.ifmap_kb * 1024 * bufs.active_fraction
    cap_f = bufs.filter_kb * 1024 * bufs.active_fraction
    cap_o = bufs.ofmap_kb * 1024
    a_bytes, b_bytes = op.m * op.k * word, op.k * op.n * (wword or word)
    out = op.m * op.n * out_word
    if df == "os":
        order1 = (a_bytes if a_bytes <= cap_i else a_bytes * g.col_folds, b_bytes)  # for col fold: for row fold
        order2 = (a_bytes, b_bytes if b_bytes <= cap_f else b_bytes * g.row_folds)  # for row fold: for col fold
        rd_a, rd_b = min(order1, order2, key=sum)
        wr = out
    elif df == "ws":  # weight tiles stay; ifmap slices stream once per column fold unless resident
        rd_a, rd_b = (a_bytes if a_bytes <= cap_i else a_bytes * g.col_folds), b_bytes
        wr = out if out <= cap_o else out * (2 * g.row_folds - 1)  # partial sums spill and come back
    else:  # is: ifmap tiles stay; the filter streams once per column fold unless resident
        rd_a, rd_b = a_bytes, (b_bytes if b_bytes <= cap_f else b_bytes * g.col_folds)
        wr = out if out <= cap_o else out * (2 * g.row_folds - 1)
    wr_frac = kept_frac if op.out_mask is not None else 1.0
    traffic = {"ifmap": rd_a * op.count * kept_frac, "filter": rd_b * op.count * kept_frac, "ofmap": wr * op.count * wr_frac}
    n_writes = op.m * op.n * op.count * wr_frac
    bw = arch.dram.bandwidth_bytes_per_cycle
    if bw is None or compute == 0:
        return traffic, n_writes, 0, {}
    if arch.dram.per_interface:
        t_mem = max(traffic.values()) / bw
    else:
        t_mem = sum(traffic.values()) / bw
    # the first fold's slices cannot overlap any compute
    prologue = min(t_mem, (g.t * (arch.array.rows + arch.array.cols)) * word / bw)
    stall = prologue + max(0.0, t_mem - prologue - compute)
    return traffic, n_writes, int(math.ceil(stall)), {"dram_cycles": t_mem, "prologue_cycles": prologue}


def _check_counters(op: Op, what: str, value: int) -> None:
    if value > INT64_MAX:
        raise SparsaError(
            f"GEMM {op.name!r} (M={op.m}, K={op.k}, N={op.n}, x{op.count}) needs {value:.3g} {what}: past the "
            f"simulator's 64-bit counters ({INT64_MAX:.3g})",
            hint="simulate a smaller shape (or split it into parts and add the cycles)",
        )


def _gemm(op: Op, arch: Arch) -> OpResult:
    r, c, df = arch.array.rows, arch.array.cols, arch.array.dataflow
    pack = _packing(op, arch)
    k_run = _run_k(op, arch)
    g = fold_geometry(op.m, k_run, op.n, r, c, df)
    # bounds before work: every count below is at most its dense value
    _check_counters(op, "MACs", op.m * op.k * op.n * op.count)
    _check_counters(op, "compute cycles", g.row_folds * g.col_folds * op.count * g.per_fold)
    folds, macs, kept_frac = _gemm_folds(op, arch)
    compute = folds.split_cores(arch.cores)
    word = (op.operand_bits or arch.bits.operand_bits) / 8
    wword_dense = (op.weight_bits or op.operand_bits or arch.bits.operand_bits) / 8  # stored weights may be narrower
    wword = _stored_weight_bytes(op, arch, wword_dense)
    out_word = arch.bits.output_bits / 8
    memory = _memory_scalesim if arch.dram.memory_model == "scalesim" else _memory_tiles
    traffic, n_writes, stall, mem_detail = memory(op, arch, g, compute, word, out_word, kept_frac, wword)
    detail: dict[str, Any] = {"m": op.m, "k": op.k, "n": op.n, "count": op.count, "row_folds": g.row_folds,
                              "col_folds": g.col_folds, "per_fold_cycles": g.per_fold, "kept_fraction": kept_frac,
                              "dram_traffic": traffic, **mem_detail}
    streamed = float(folds.total - folds.n * (g.per_fold - g.t))  # sum of T over run folds
    sram_reads = streamed * (r + c) * word  # each streamed step reads one ifmap edge and one filter edge
    counts = {
        "mac": float(macs) / pack,  # in full-width MAC equivalents: `pack` narrow products cost one
        "sram_read_byte": sram_reads,
        "sram_write_byte": float(n_writes * out_word),
        "dram_byte": float(sum(traffic.values())),
    }
    n_folds = folds.n
    res = OpResult(
        op.name, "gemm", op.layer, compute + stall, compute, stall, "memory" if stall > MEMORY_BOUND_STALL * max(1, compute) else "compute",
        macs=macs, dense_macs=op.dense_macs, folds=n_folds, folds_dense=g.row_folds * g.col_folds * op.count,
        dram_bytes=counts["dram_byte"], sram_read_bytes=sram_reads, sram_write_bytes=counts["sram_write_byte"],
        counts=counts, detail=detail,
    )
    res.exploited, res.not_exploited = _exploit_notes(op, arch, pack, k_run, wword_dense, wword)
    _check_counters(op, "cycles with DRAM stalls", res.cycles)
    # SCALE-Sim reports the index of the last cycle: folds * per_fold - 1 (+ stalls)
    res.detail["scalesim_total_cycles"] = res.cycles - 1 if res.cycles else 0
    return res


def _exploit_notes(op: Op, arch: Arch, pack: int, k_run: int, wword_dense: float,
                   wword: float) -> tuple[list[str], list[str]]:
    """Per GEMM: which of its compression the architecture exploited, which not, and why."""
    yes, no = [], []
    full = arch.bits.operand_bits
    wb, ab = op.weight_bits, op.operand_bits
    if wb is not None and wb < full:
        yes.append(f"weight_bits={wb}: weights stored and fetched at {wb} bits")
    elif wb is not None:  # say so: quantizing to the preset's width saves nothing the dense run did not
        no.append(f"weight_bits={wb}: the preset's own {full}-bit operands (the dense model is simulated at {full} bits too)")
    narrow = max(ab or full, wb or ab or full)
    if pack > 1:
        yes.append(f"{narrow}-bit operands: {pack} products per MAC (narrow operand lanes)")
    elif (wb is not None and wb < full) or (ab is not None and ab < full):
        if not arch.bits.split_multipliers:
            why = "preset has no narrow operand lanes (bits.split_multipliers)"
        elif narrow * 2 > full:
            why = f"a split multiplier needs both operands at most {full // 2} bits, the widest here is {narrow}"
        else:
            why = "inner-dimension masks index K itself"
        no.append(f"weight_bits={wb}, act_bits={ab}: not packed ({why})")
    if op.weight_density < 1.0:
        d = f"weight_density={op.weight_density:.3f} ({op.weight_storage})"
        if _skips_zeros(op, arch):
            yes.append(f"{d}: zero weights skipped, inner dimension {op.k} -> {k_run * pack} "
                       f"(+{arch.exploits.zero_skip_overhead:.0%} lane imbalance)")
        else:
            no.append(f"{d}: compute not reduced (preset has no weight zero-skipping)")
        if wword < wword_dense:
            yes.append(f"{d}: only non-zeros stored ({arch.exploits.index_format} index), {wword:.3g} bytes "
                       f"per weight instead of {wword_dense:.3g}")
        elif arch.exploits.compressed_weight_storage:
            no.append(f"{d}: stored dense (the {arch.exploits.index_format} index would cost more than the zeros)")
        else:
            no.append(f"{d}: weight bytes not reduced (preset stores weights dense)")
    if op.out_mask is not None or op.inner_mask is not None:
        if arch.sparsity_engine.present:
            yes.append(f"attention masks: pruned blocks skipped (sparsity engine, skip={arch.sparsity_engine.skip})")
        else:
            no.append("attention masks: computed dense (preset has no sparsity engine)")
    return yes, no


def reason_counts(ops: "list[OpResult]") -> dict[str, dict[str, int]]:
    """The ops' exploited / not-exploited reasons, each kind once with how many ops gave it: the
    per-op figures (densities, inner dimensions, bytes) become N, so one reason reads as one row."""
    out: dict[str, dict[str, int]] = {"exploited": {}, "not_exploited": {}}
    for o in ops:
        for key in out:
            for r in getattr(o, key):
                r = re.sub(r"=\d+\.\d+", "=N", r)
                r = re.sub(r"\d+ -> \d+", "N -> N", r)
                r = re.sub(r"\d+(\.\d+)? bytes per weight instead of \d+(\.\d+)?", "N bytes per weight instead of N", r)
                out[key][r] = out[key].get(r, 0) + 1
    return out


# ---- other units ------------------------------------------------------------------------------


def _softmax(op: Op, arch: Arch) -> OpResult:
    word = arch.bits.output_bits / 8
    if arch.softmax_unit.present:
        su = arch.softmax_unit
        cyc = math.ceil(op.elems / (su.elems_per_cycle * arch.cores)) + math.ceil(op.rows / arch.cores) * su.row_latency
        counts = {"softmax_elem": float(op.elems)}
    else:  # exp, sum, reciprocal-multiply, max on the vector unit: 4 ops per element
        cyc = math.ceil(4 * op.elems / (arch.vector_unit.elems_per_cycle * arch.cores))
        counts = {"vector_elem": float(4 * op.elems)}
    counts.update(sram_read_byte=op.elems * word, sram_write_byte=op.elems * word)
    return OpResult(op.name, "softmax", op.layer, cyc, cyc, 0, "compute", counts=counts,
                    sram_read_bytes=op.elems * word, sram_write_bytes=op.elems * word)


def _elementwise(op: Op, arch: Arch) -> OpResult:
    word = arch.bits.output_bits / 8
    n = op.elems * op.ops_per_elem
    cyc = math.ceil(n / (arch.vector_unit.elems_per_cycle * arch.cores))
    counts = {"vector_elem": float(n), "sram_read_byte": op.elems * word, "sram_write_byte": op.elems * word}
    return OpResult(op.name, "elementwise", op.layer, cyc, cyc, 0, "compute", counts=counts,
                    sram_read_bytes=op.elems * word, sram_write_bytes=op.elems * word)


def _sparsity_engine(op: Op, arch: Arch) -> OpResult:
    se = arch.sparsity_engine
    if se.present:
        heads_per_core = math.ceil(op.heads / arch.cores)
        rows_per_core = math.ceil(op.block_rows / arch.cores)
        if se.overlapped:  # thresholds run while the array computes the next block-row; the tail shows
            cyc = heads_per_core * (se.cycles_per_block_row + se.cycles_per_head)
        else:
            cyc = rows_per_core * se.cycles_per_block_row + heads_per_core * se.cycles_per_head
        counts = {"se_block": float(op.blocks)}
    else:  # no engine: importances, min/max/sum and thresholds on the vector unit (4 ops per block)
        cyc = math.ceil(4 * op.blocks / (arch.vector_unit.elems_per_cycle * arch.cores))
        counts = {"vector_elem": float(4 * op.blocks)}
    return OpResult(op.name, "sparsity_engine", op.layer, cyc, cyc, 0, "compute", counts=counts)


def _unit_area(kind: str, arch: Arch, area: dict[str, float]) -> float:
    if kind == "gemm":
        return area["pe_array"] + area["sram"]
    if kind == "softmax":
        return area["softmax_unit"] if arch.softmax_unit.present else area["vector_unit"]
    if kind == "sparsity_engine":
        return area["sparsity_engine"] if arch.sparsity_engine.present else area["vector_unit"]
    return area["vector_unit"]


_RUNNERS = {"gemm": _gemm, "softmax": _softmax, "elementwise": _elementwise, "sparsity_engine": _sparsity_engine}


def simulate(workload: Workload, arch: "Arch | str") -> SimResult:
    """Simulate every op of `workload` on `arch` (an `Arch` or anything `load_arch` accepts)."""
    if not isinstance(arch, Arch):
        arch = load_arch(arch)
    if not isinstance(workload, Workload):
        raise SparsaError(f"simulate() needs a Workload, got {type(workload).__name__}",
                          hint="build one with sparsa.hw.workload.from_model or from_shapes")
    table = {k: float(getattr(arch.energy_pj, k)) for k in ENERGY_KEYS}
    area = arch.total_area()
    results = []
    totals = {k: 0.0 for k in ENERGY_KEYS}
    macs_per_cycle = arch.macs
    for op in workload.ops:
        runner = _RUNNERS.get(op.kind)
        if runner is None:
            raise SparsaError(f"op {op.name!r} has unknown kind {op.kind!r}", hint=f"kinds: {', '.join(_RUNNERS)}")
        res = runner(op, arch)
        res.counts = {k: float(res.counts.get(k, 0.0)) for k in ENERGY_KEYS}
        res.energy_pj = float(sum(res.counts[k] * table[k] for k in ENERGY_KEYS))
        res.area_mm2 = _unit_area(op.kind, arch, area)
        if op.kind == "gemm":
            res.utilisation = res.counts["mac"] / max(1, res.cycles * macs_per_cycle)  # slots, not narrow products
        for k in ENERGY_KEYS:
            totals[k] += res.counts[k]
        results.append(res)
    return SimResult(arch.name, workload.name, arch.clock_hz, results, totals, table, area, arch.placeholder,
                     arch.exploit_summary())


def simulate_gemm(m: int, k: int, n: int, arch: "Arch | str", *, count: int = 1) -> OpResult:
    """One dense GEMM C[m,n] = A[m,k] . B[k,n] (x `count`); `.detail['scalesim_total_cycles']` is
    the figure SCALE-Sim's COMPUTE_REPORT calls "Total Cycles"."""
    for v, nm in ((m, "M"), (k, "K"), (n, "N"), (count, "count")):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or int(v) <= 0:
            raise SparsaError(f"GEMM {nm}={v!r} must be a positive integer", hint="give the shape as M,K,N, e.g. 512,768,768")
    if not isinstance(arch, Arch):
        arch = load_arch(arch)
    wl = Workload("gemm", [Op("gemm", "gemm", None, int(m), int(k), int(n), count=int(count))], seq_len=int(m))
    return simulate(wl, arch).ops[0]
