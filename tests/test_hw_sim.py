"""The simulator against SCALE-Sim v3 reference cycles, and its scaling laws (sparsity, array size,
bandwidth, energy accounting, cost per tile)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sparsa.hw.arch import load_arch
from sparsa.hw.gemm_model import fold_geometry
from sparsa.hw.sim import ENERGY_KEYS, _gemm_folds, simulate, simulate_gemm
from sparsa.hw.workload import Op, Workload, from_shapes

# SCALE-Sim 3.0.0 "Total Cycles" (COMPUTE_REPORT.csv), produced by
#   .venv/bin/python bench/sim_vs_scalesim.py        (results in bench/_work/scalesim_cache.json)
# and, for the 8x8 rows, .venv-scalesim/bin/python bench/scalesim/runner.py with the same job.
# (M, K, N, array, dataflow, SRAM KiB ifmap/filter/ofmap, words/cycle or None = CALC) -> total cycles
SCALESIM_REF = [
    ((20, 30, 12, 8, "os", (64, 64, 64), None), 263),
    ((20, 30, 12, 8, "ws", (64, 64, 64), None), 335),
    ((20, 30, 12, 8, "is", (64, 64, 64), None), 407),
    ((64, 768, 768, 32, "os", (256, 256, 128), None), 39839),
    ((64, 768, 768, 32, "ws", (256, 256, 128), None), 91007),
    ((100, 37, 53, 32, "os", (256, 256, 128), None), 791),
    ((100, 37, 53, 32, "ws", (256, 256, 128), None), 775),
    ((197, 48, 96, 32, "ws", (256, 256, 128), None), 1745),
    ((64, 384, 1536, 32, "os", (256, 256, 128), None), 42815),
    ((64, 768, 768, 128, "os", (256, 256, 128), None), 6131),
]
# memory-limited (USER bandwidth, small SRAMs): SCALE-Sim reports stalls; total must be within 10%
SCALESIM_MEM_REF = [
    ((64, 100, 64, 8, "os", (1, 1, 1), 2), 181265, 173970),
    ((64, 100, 64, 8, "ws", (1, 1, 1), 2), 58659, 49716),
    ((64, 384, 384, 32, "os", (8, 8, 8), 4), 590297, 579594),
    ((64, 384, 384, 32, "ws", (8, 8, 8), 4), 1438018, 1415267),
]


def _arch(rows, df, kb, bw):
    return load_arch({
        "name": "t", "clock_hz": 1e9, "array": {"rows": rows, "cols": rows, "dataflow": df},
        "buffers": {"ifmap_kb": kb[0], "filter_kb": kb[1], "ofmap_kb": kb[2]},
        "dram": {"memory_model": "scalesim"} if bw is None else
                {"memory_model": "scalesim", "bandwidth_bytes_per_cycle": bw, "per_interface": True},
    })


@pytest.mark.parametrize("job,ref", SCALESIM_REF)
def test_dense_gemm_matches_scalesim_within_1pct(job, ref):
    m, k, n, rows, df, kb, bw = job
    r = simulate_gemm(m, k, n, _arch(rows, df, kb, bw))
    assert abs(r.detail["scalesim_total_cycles"] - ref) <= 0.01 * ref
    assert r.stall_cycles == 0


@pytest.mark.parametrize("job,ref,ref_stalls", SCALESIM_MEM_REF)
def test_memory_limited_gemm_within_10pct_of_scalesim(job, ref, ref_stalls):
    m, k, n, rows, df, kb, bw = job
    r = simulate_gemm(m, k, n, _arch(rows, df, kb, bw))
    assert abs(r.detail["scalesim_total_cycles"] - ref) <= 0.10 * ref
    assert r.bound == "memory" and r.stall_cycles > 0.5 * ref_stalls


def test_dense_cycles_follow_folds_and_array_size():
    m, k, n = 256, 512, 384
    for rows in (8, 32, 128):
        for df in ("os", "ws"):
            g = fold_geometry(m, k, n, rows, rows, df)
            r = simulate_gemm(m, k, n, _arch(rows, df, (256, 256, 128), None))
            assert r.cycles == g.row_folds * g.col_folds * g.per_fold
            assert r.macs == m * k * n
    small = simulate_gemm(m, k, n, _arch(8, "os", (256, 256, 128), None)).cycles
    big = simulate_gemm(m, k, n, _arch(32, "os", (256, 256, 128), None)).cycles
    assert big < small / 8  # 16x the MACs, fill/drain costs a bit


def test_bandwidth_limits_make_memory_bound():
    base = load_arch("hdp-edge")
    fast = simulate_gemm(128, 768, 768, load_arch(base, **{"dram.bandwidth_bytes_per_cycle": 1024}))
    slow = simulate_gemm(128, 768, 768, load_arch(base, **{"dram.bandwidth_bytes_per_cycle": 0.05}))
    slower = simulate_gemm(128, 768, 768, load_arch(base, **{"dram.bandwidth_bytes_per_cycle": 0.025}))
    assert fast.bound == "compute" and fast.cycles < 1.01 * fast.compute_cycles
    assert slow.bound == "memory" and slow.compute_cycles == fast.compute_cycles
    # memory bound: time = traffic / bandwidth (same traffic), so halving bandwidth doubles it
    assert slow.dram_bytes == slower.dram_bytes
    assert slow.cycles == pytest.approx(slow.dram_bytes / 0.05, rel=0.01)
    assert slower.cycles == pytest.approx(2 * slow.cycles, rel=0.01)


def _masked_op(mask, m, k, n, block, inner=False):
    kw = {"inner_mask": mask} if inner else {"out_mask": mask}
    return Op("x", "gemm", 0, m, k, n, count=mask.shape[0], block=block, **kw)


def test_skipped_tiles_save_exactly_their_work():
    arch = load_arch("hdp-edge", **{"sparsity_engine.skip": "tile", "dram.bandwidth_bytes_per_cycle": 1e9})
    seq, hd, b = 64, 32, 2
    nb = seq // b
    g = fold_geometry(seq, hd, seq, arch.array.rows, arch.array.cols, "os")
    dense = np.ones((3, nb, nb), dtype=bool)
    cyc_dense = simulate(Workload("w", [_masked_op(dense, seq, hd, seq, b)], seq), arch).ops[0]
    assert cyc_dense.compute_cycles == 3 * g.row_folds * g.col_folds * g.per_fold
    # prune whole 4x8 tiles (2x4 blocks each): each saves exactly one fold
    m = dense.copy()
    m[0, 0:2, 0:4] = False
    m[1, 4:6, 8:12] = False
    m[2, 2:4, :] = False  # a whole tile row: col_folds tiles
    saved = 2 + g.col_folds
    r = simulate(Workload("w", [_masked_op(m, seq, hd, seq, b)], seq), arch).ops[0]
    assert cyc_dense.compute_cycles - r.compute_cycles == saved * g.per_fold
    assert r.macs == int(m.sum()) * b * b * hd
    # pruning blocks inside otherwise kept tiles saves no cycles (and no more than that)
    m2 = m.copy()
    m2[0, 2, 0] = m2[1, 7, 9] = False
    r2 = simulate(Workload("w", [_masked_op(m2, seq, hd, seq, b)], seq), arch).ops[0]
    assert r2.compute_cycles == r.compute_cycles and r2.macs == r.macs - 2 * b * b * hd


def test_block_packing_and_pv_key_skipping():
    arch = load_arch("hdp-edge", **{"dram.bandwidth_bytes_per_cycle": 1e9})  # skip: block (fetch-upon-mask)
    seq, hd, b = 64, 32, 2
    nb = seq // b
    rng = np.random.default_rng(0)
    mask = rng.random((2, nb, nb)) < 0.3
    folds, macs, _ = _gemm_folds(_masked_op(mask, seq, hd, seq, b), arch)
    per_tile = (arch.array.rows // b) * (arch.array.cols // b)
    g = fold_geometry(seq, hd, seq, arch.array.rows, arch.array.cols, "os")
    stripes = mask.reshape(2, nb // 2, 2, nb).sum(axis=(2, 3))  # kept blocks per 4-row stripe
    assert folds.total == np.ceil(stripes / per_tile).sum() * g.per_fold
    # P.V: a row stripe streams only the V rows of key blocks some query row in it keeps
    pv = _masked_op(mask, seq, seq, hd, b, inner=True)
    folds, macs, _ = _gemm_folds(pv, arch)
    union = mask.reshape(2, nb // 2, 2, nb).any(axis=2).sum(axis=2) * b  # [2, stripes]
    gp = fold_geometry(seq, seq, hd, arch.array.rows, arch.array.cols, "os")
    expect = (union + arch.array.rows + arch.array.cols - 2).sum() * gp.col_folds
    assert folds.total == expect and macs == int(mask.sum()) * b * b * hd


def test_pruned_heads_cost_nothing_after_the_integer_pass():
    from sparsa.hw.workload import synthetic_masks

    arch = load_arch("hdp-edge")
    masks = synthetic_masks(1, 4, 32, block_keep=0.5, head_keep=1.0, seed=1)
    w_all = from_shapes(num_layers=1, hidden=128, heads=4, ffn=256, seq_len=32, masks=masks)
    masks[0]["head_mask"][0, 1:] = False  # keep only head 0
    w_one = from_shapes(num_layers=1, hidden=128, heads=4, ffn=256, seq_len=32, masks=masks)
    r_all, r_one = simulate(w_all, arch), simulate(w_one, arch)
    by = lambda r: {o.name.split(".")[-1]: o for o in r.ops}  # noqa: E731
    a, o = by(r_all), by(r_one)
    assert o["qk_int"].cycles == a["qk_int"].cycles  # integer pass always runs
    bm = masks[0]["block_mask"][0]
    assert o["qk_frac"].macs == int(bm[0].sum()) * 4 * 2 * 32
    assert o["pv"].macs == int(bm[0].sum()) * 4 * 32
    assert o["qk_frac"].cycles < a["qk_frac"].cycles and o["pv"].cycles < a["pv"].cycles


def test_energy_is_counts_times_energy_per_event_exactly():
    from sparsa.hw.workload import synthetic_masks

    arch = load_arch("hdp-server")
    w = from_shapes(num_layers=2, hidden=64, heads=2, ffn=128, seq_len=32,
                    masks=synthetic_masks(2, 2, 32, seed=3))
    r = simulate(w, arch)
    e = arch.energy_pj
    for o in r.ops:
        assert o.energy_pj == sum(o.counts[k] * getattr(e, k) for k in ENERGY_KEYS)
    total_counts = {k: sum(o.counts[k] for o in r.ops) for k in ENERGY_KEYS}
    assert r.counts == total_counts
    assert r.energy_pj == sum(total_counts[k] * getattr(e, k) for k in ENERGY_KEYS)
    assert r.energy_pj == pytest.approx(sum(o.energy_pj for o in r.ops), rel=1e-12)
    # doubling one energy entry adds exactly that count once more
    r2 = simulate(w, load_arch(arch, **{"energy_pj.mac": 2 * e.mac}))
    assert r2.energy_pj == pytest.approx(r.energy_pj + total_counts["mac"] * e.mac, rel=1e-12)


def test_cost_grows_with_tiles_not_cycles():
    arch = load_arch("systolic-32-os")
    huge = simulate_gemm(64, 10**12, 64, arch)  # ~1e12 cycles, 4 tiles: a per-cycle model would never return
    assert huge.folds == 4 and huge.cycles == 4 * (10**12 + 62)
    folds, _, _ = _gemm_folds(Op("x", "gemm", None, 512, 64, 512), arch)
    assert folds.n == 16 * 16 and folds.total == 16 * 16 * (64 + 62)  # 256 tiles of K + fill + drain cycles


@pytest.mark.parametrize("preset", ["hdp-server", "systolic-32-os", "systolic-32-ws"])
def test_identical_folds_are_stored_once(preset):
    # memory must not grow with the number of folds: a 1 x 1 x N GEMM has N / cols identical folds
    arch = load_arch(preset, **{"dram.bandwidth_bytes_per_cycle": 4})  # with bandwidth: the memory walk runs too
    sizes = []
    for n in (10**3, 10**6, 4 * 10**10):
        folds, _, _ = _gemm_folds(Op("x", "gemm", None, 1, 1, n), arch)
        sizes.append((folds.cycles.size, folds.counts.size))
        r = simulate_gemm(1, 1, n, arch)  # returns (a per-fold array would need 40 GB for the largest)
        assert r.folds == folds.n and r.compute_cycles == math.ceil(folds.n / arch.cores) * int(folds.cycles[0])
    assert sizes == [(1, 1)] * 3


def test_ws_masked_folds_group_by_length():
    # WS with an output mask: folds differ only by their streamed length; one entry per distinct length
    arch = load_arch("hdp-edge", **{"array.dataflow": "ws", "sparsity_engine.skip": "tile"})
    mask = np.zeros((3, 32, 32), dtype=bool)
    mask[:, :4, :] = True  # every column fold streams 4 blocks
    mask[0, 4:10, :4] = True  # one column fold of copy 0 streams 10
    folds, _, _ = _gemm_folds(_masked_op(mask, 64, 16, 64, 2), arch)
    g = fold_geometry(64, 16, 64, 4, 8, "ws")
    fill = 2 * 4 + 8 - 2
    assert folds.cycles.tolist() == [8 + fill, 20 + fill]
    assert folds.counts.tolist() == [(3 * g.col_folds - 1) * g.row_folds, g.row_folds]


def test_absurd_gemm_sizes_are_refused_before_work():
    from sparsa.errors import SparsaError

    for shape in ((10**7, 10**7, 10**7), (1, 1, 10**30)):
        with pytest.raises(SparsaError, match="64-bit counters"):
            simulate_gemm(*shape, "hdp-server")
    for bad in (1.5, float("nan"), True, "3", -2):
        with pytest.raises(SparsaError, match="positive integer"):
            simulate_gemm(4, bad, 4, "hdp-server")


def test_multicore_splits_folds():
    one = load_arch("hdp-edge", **{"dram.bandwidth_bytes_per_cycle": 1e9})
    eight = load_arch(one, cores=8)
    r1, r8 = simulate_gemm(256, 64, 256, one), simulate_gemm(256, 64, 256, eight)
    g = fold_geometry(256, 64, 256, 4, 8, "os")
    assert r1.compute_cycles == g.row_folds * g.col_folds * g.per_fold
    assert r8.compute_cycles == math.ceil(g.row_folds * g.col_folds / 8) * g.per_fold


def test_bad_gemm_shape_is_a_sparsa_error():
    from sparsa.errors import SparsaError

    with pytest.raises(SparsaError, match="K=0"):
        simulate_gemm(4, 0, 4, "systolic-32-os")


def test_split_multipliers_run_narrow_products_in_parallel():
    # hdp presets: 8-bit PEs split into four 4x4-bit products (HDP's integer/fractional parts)
    arch = load_arch("hdp-edge", **{"dram.bandwidth_bytes_per_cycle": 1e9})
    narrow = simulate(Workload("w", [Op("i", "gemm", 0, 64, 64, 64, operand_bits=4)], 64), arch).ops[0]
    wide = simulate(Workload("w", [Op("w", "gemm", 0, 64, 64, 64)], 64), arch).ops[0]
    g4 = fold_geometry(64, 16, 64, 4, 8, "os")
    assert narrow.compute_cycles == g4.row_folds * g4.col_folds * g4.per_fold
    assert narrow.macs == wide.macs == 64**3
    assert narrow.counts["mac"] == wide.counts["mac"] / 4  # energy in full-width MAC equivalents
    plain = load_arch(arch, **{"bits.split_multipliers": False})
    same = simulate(Workload("w", [Op("i", "gemm", 0, 64, 64, 64, operand_bits=4)], 64), plain).ops[0]
    assert same.compute_cycles == wide.compute_cycles


def test_tiles_memory_model_traffic():
    # 16 KiB buffers (8 KiB active halves); OS 4x8 array; 8-bit words
    arch = load_arch("hdp-edge", **{"dram.bandwidth_bytes_per_cycle": 1e9, "bits.split_multipliers": False})
    small = simulate_gemm(32, 64, 32, arch)  # A = B = 2 KiB: each fetched once
    assert small.dram_bytes == 32 * 64 + 64 * 32 + 32 * 32
    big = simulate_gemm(256, 128, 64, arch)  # A = 32 KiB does not fit, B = 8 KiB fits
    g = fold_geometry(256, 128, 64, 4, 8, "os")
    a, b = 256 * 128, 128 * 64
    # cheaper order: row folds outer, B resident, A streamed once
    assert big.dram_bytes == min(a * g.col_folds + b, a + b) + 256 * 64
