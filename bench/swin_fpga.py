"""Seed 001 on the simulator: Swin-T 224² on `swin-fpga` against the seed's 5.437 ms, and what the
seed's compression (54.9% unstructured magnitude pruning + 8-bit symmetric weights) changes there.

    .venv/bin/python bench/swin_fpga.py [--quick]

1. Swin-T (transformers `SwinConfig()` defaults, random init: cost does not depend on the weights) is
   saved with `save_pretrained` and loaded through `sparsa.models.load`; its workload is traced from
   its own forward pass at 224² (`sparsa.hw.workload.from_model`) and simulated on the preset.
2. Mapping: the seed publishes resources only (3,267 DSPs), no clock, packing or array. Peak MAC
   rate = DSPs x MACs per DSP x clock; the table gives the latency at full utilisation and the
   utilisation 5.437 ms needs. Then the traced workload is simulated on arrays that fit the DSPs at
   1 or 2 8-bit MACs per DSP (a DSP48E2 computes two 8-bit products sharing one operand), clocks of
   200-300 MHz (DRAM held at the preset's 19.2 GB/s) and vector units of 64 or 256 lanes (softmax,
   LayerNorm, GELU, adds; the LUTs would allow either).
3. Compression by sparsa's own stages on Swin-T: magnitude masks on every attention/MLP Linear at
   54.9% (the tolerance schedule's unstructured rule applied directly at the seed's Table 1 rate,
   not the tolerance search on 224² data), then `quantize_` 8-bit sym, searched clipping, per
   channel (recipes/seed001_tolerance_quant.yaml). Dense vs compressed on `swin-fpga`, on the
   best-fitting mapping, and on a what-if variant that declares zero-skipping and compressed
   weight storage; per-op exploited / not-exploited reasons with counts.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SEED_MS = 5.437  # seed 001, Table 3
SEED_DSP = 3267
DRAM_BYTES_PER_S = 19.2e9  # the preset's DDR4-2400 x64
PRUNE_RATE = 0.549  # seed 001, Table 1 at 5% tolerance


def build_swin_t():
    import torch
    import transformers as tf

    from sparsa.models import load

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tf.SwinForImageClassification(tf.SwinConfig(num_labels=1000)).eval().save_pretrained(tmp)
        return load(tmp)


def gemm_split(res, arch) -> dict:
    """Cycles on the array vs the vector/softmax units; the GEMMs' utilisation as simulated
    (SCALE-Sim: every fold fills and drains the array) and with fill/drain hidden (padding only)."""
    g = [o for o in res.ops if o.kind == "gemm"]
    gemm_cyc = sum(o.cycles for o in g)
    slots = sum(o.counts["mac"] for o in g)
    padded = 0
    for o in g:
        d = o.detail
        t = d["per_fold_cycles"] - (arch.array.rows + arch.array.cols - 2 if arch.array.dataflow == "os"
                                    else 2 * arch.array.rows + arch.array.cols - 2)
        padded += d["row_folds"] * d["col_folds"] * d["count"] * t
    stalls = sum(o.stall_cycles for o in g)
    return {"gemm_cycles": gemm_cyc, "other_cycles": res.cycles - gemm_cyc,
            "gemm_util": slots / max(1, gemm_cyc * arch.macs), "padded_util": slots / max(1, padded * arch.macs),
            # the same machine if each fold's fill/drain overlapped the next fold (double-buffered
            # accumulators); the simulator, like SCALE-Sim, lets every fold drain before the next
            "hidden_s": (padded + stalls + res.cycles - gemm_cyc) / arch.clock_hz}


def variant(base, rows, cols, df, clock, vec):
    from sparsa.hw.arch import load_arch

    return load_arch(base, **{"array.rows": rows, "array.cols": cols, "array.dataflow": df, "clock_hz": clock,
                              "vector_unit.elems_per_cycle": vec,
                              "dram.bandwidth_bytes_per_cycle": DRAM_BYTES_PER_S / clock})


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer mapping points")
    args = ap.parse_args()
    import torch

    from sim_macs import cpu_line

    from sparsa.hw.arch import load_arch
    from sparsa.hw.sim import reason_counts, simulate
    from sparsa.hw.workload import from_model

    print(cpu_line())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    t0 = time.perf_counter()
    lm = build_swin_t()
    wl = from_model(lm)
    macs = sum(o.dense_macs for o in wl.ops)
    print(f"Swin-T 224² traced: {len(wl.ops)} ops, {macs:,} MACs ({macs / 1e9:.3f} GMAC), "
          f"flop counter {wl.meta['flop_counter_macs']:,}; {time.perf_counter() - t0:.1f} s\n")

    base = load_arch("swin-fpga")
    dense = simulate(wl, base)
    s = gemm_split(dense, base)
    print(f"## Dense Swin-T on swin-fpga ({base.array.rows}x{base.array.cols} {base.array.dataflow}, "
          f"{base.clock_hz / 1e6:.0f} MHz, vector unit {base.vector_unit.elems_per_cycle}/cycle)\n")
    print(f"latency {dense.latency_s * 1e3:.3f} ms = {dense.latency_s * 1e3 / SEED_MS:.2f}x the seed's {SEED_MS} ms; "
          f"{dense.cycles:,} cycles ({s['gemm_cycles']:,} array, {s['other_cycles']:,} vector/softmax), "
          f"utilisation {dense.utilisation(base.macs):.3f} (GEMMs {s['gemm_util']:.3f} simulated, "
          f"{s['padded_util']:.3f} with fill/drain hidden), energy {dense.energy_pj / 1e9:.2f} mJ\n")

    print("## What 5.437 ms needs (peak = DSPs x MACs/DSP x clock; MACs of the trace)\n")
    print("| clock MHz | MACs per DSP | peak GMAC/s | latency at 100% | utilisation needed for 5.437 ms |")
    print("|---:|---:|---:|---:|---:|")
    for clock in (200e6, 250e6, 300e6):
        for pack in (1, 2):
            peak = SEED_DSP * pack * clock
            need = macs / (SEED_MS * 1e-3) / peak
            print(f"| {clock / 1e6:.0f} | {pack} | {peak / 1e9:.0f} | {macs / peak * 1e3:.3f} ms | "
                  f"{need:.1%}{' (impossible)' if need > 1 else ''} |")

    print("\n## Simulated mappings within 3,267 DSPs (traced Swin-T; DRAM 19.2 GB/s at every clock)\n")
    shapes = [(56, 56, 1), (48, 64, 1), (64, 96, 2), (56, 112, 2), (96, 64, 2), (32, 192, 2)]
    clocks = (200e6, 250e6, 300e6)
    vecs = (64, 256)
    dfs = ("os", "ws")
    if args.quick:
        shapes, clocks, dfs = [(56, 56, 1), (64, 96, 2)], (200e6, 300e6), ("os",)
    print("| array | MACs/DSP | DSPs | dataflow | clock MHz | vector lanes | latency ms | / 5.437 | utilisation "
          "| GEMM util (sim) | vector+softmax share | GEMM util, fill/drain hidden | ms, fill/drain hidden | / 5.437 |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    best = None
    for rows, cols, pack in shapes:
        for df in dfs:
            for clock in clocks:
                for vec in vecs:
                    a = variant(base, rows, cols, df, clock, vec)
                    r = simulate(wl, a)
                    sp = gemm_split(r, a)
                    ms = r.latency_s * 1e3
                    print(f"| {rows}x{cols} | {pack} | {rows * cols // pack} | {df} | {clock / 1e6:.0f} | {vec} | "
                          f"{ms:.3f} | {ms / SEED_MS:.2f} | {r.utilisation(a.macs):.3f} | {sp['gemm_util']:.3f} | "
                          f"{sp['other_cycles'] / r.cycles:.1%} | {sp['padded_util']:.3f} | {sp['hidden_s'] * 1e3:.3f} | "
                          f"{sp['hidden_s'] * 1e3 / SEED_MS:.2f} |", flush=True)
                    # the closest to the seed from above or below, preferring the lowest clock
                    if best is None or abs(ms - SEED_MS) < abs(best[0] - SEED_MS):
                        best = (ms, a, pack)
    ms, mapped, pack = best
    print(f"\nclosest mapping: {mapped.array.rows}x{mapped.array.cols} {mapped.array.dataflow}, {pack} MACs/DSP, "
          f"{mapped.clock_hz / 1e6:.0f} MHz, vector unit {mapped.vector_unit.elems_per_cycle}: {ms:.3f} ms "
          f"({ms / SEED_MS:.2f}x the seed)\n")

    print(f"## Compression by sparsa's stages: {PRUNE_RATE:.1%} magnitude pruning (attention/MLP Linear) + 8-bit sym\n")
    t0 = time.perf_counter()
    comp = compress(lm)
    wc = from_model(comp)
    print(f"(prune + quantize + trace {time.perf_counter() - t0:.1f} s)\n")
    whatif = load_arch(base, **{"name": "swin-fpga+sparse", "exploits.weight_zero_skipping": True,
                                "exploits.compressed_weight_storage": True})
    print("| preset | dense ms | compressed ms | speedup | dense mJ | compressed mJ | energy saved "
          "| dense DRAM MB | compressed DRAM MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    last = None
    for label, a in (("swin-fpga", base), ("closest mapping", mapped), ("swin-fpga + zero-skip + compressed weights (what-if)", whatif)):
        d, c = simulate(wl, a), simulate(wc, a)
        print(f"| {label} | {d.latency_s * 1e3:.3f} | {c.latency_s * 1e3:.3f} | {d.cycles / c.cycles:.3f}x | "
              f"{d.energy_pj / 1e9:.3f} | {c.energy_pj / 1e9:.3f} | {1 - c.energy_pj / d.energy_pj:.1%} | "
              f"{d.dram_bytes / 1e6:.2f} | {c.dram_bytes / 1e6:.2f} |")
        if last is None:
            last = c
        what = c
    for label, res in (("swin-fpga", last), ("what-if", what)):
        print(f"\nper-op reasons, compressed Swin-T on {label} (count of ops):\n")
        for key, counts in reason_counts(res.ops).items():
            for text, n in sorted(counts.items()):
                print(f"- {key.replace('_', ' ')} x{n}: {text}")


def compress(lm):
    """Sparsa's own stages on a copy: the tolerance schedule's unstructured magnitude rule at the
    seed's rate on every attention/MLP Linear, then 8-bit symmetric search-clipped weights."""
    import copy

    import torch

    from sparsa.prune.operators import UnstructuredOperator
    from sparsa.quant import QuantConfig, quantize_

    lm = copy.deepcopy(lm)
    rule = UnstructuredOperator(lm)
    with torch.no_grad():
        for slot in rule.slots:
            p = lm.model.get_parameter(slot)
            p.mul_(rule.mask_for(p, PRUNE_RATE))
    quantize_(lm, QuantConfig(bits=8, scheme="sym", clip="search", per_channel=True))
    return lm


if __name__ == "__main__":
    main()
