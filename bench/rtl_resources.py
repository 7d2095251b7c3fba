"""RTL bench: bit-exact co-simulation counts (>= 10,000 vectors per unit) and Yosys resource counts.

    .venv/bin/python bench/rtl_resources.py [--vectors 10000] [--skip-synth] [--skip-cosim]

Prints two markdown tables and writes `sparsa/hw/rtl/synth_results.json` (what the simulator reads for
area). Co-simulation runs on Verilator when installed (the Python simulator otherwise, much slower);
the Python simulator's speed on the same trace is measured beside it (a ratio from the same run).
Synthesis: Yosys synth_xilinx (xc7) up to LUT mapping + abc -luts (TOOLCHAIN.md), PE arrays
hierarchical. Seed 001's FPGA totals are printed beside the counts for scale.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sparsa.hw.rtl import cosim  # noqa: E402
from sparsa.hw.rtl.synth import synth, yosys_command  # noqa: E402
from sparsa.hw.rtl.verilator import verilator_path  # noqa: E402
from sparsa.io import atomic_write_json  # noqa: E402

SEED001 = {"dsp": 3267, "bram36": 1402, "lut": 508787, "ff": 682198, "uram": 33}  # seed 001 Table 3

# (label, unit, preset, overrides): realistic sizes (D_h = 64, sequences up to 128 tokens)
COSIM_CASES = [
    ("pe", "pe", "hdp-edge", {"head_dim": 64}),
    ("pe_array 2x4 (hdp-edge)", "pe_array", "hdp-edge", {"head_dim": 64}),
    ("sparsity_engine", "sparsity_engine", "hdp-edge", {"head_dim": 64, "max_blocks": 64}),
    ("softmax", "softmax", "hdp-edge", {"head_dim": 64, "max_blocks": 64}),
    ("ncore seed000 (4 lanes)", "ncore", "seed000", {}),
    ("ncore hdp-server (8 PE cores)", "ncore", "hdp-server", {"head_dim": 64}),
]

SYNTH_CASES = [
    ("pe", "pe", "hdp-edge", {"head_dim": 64}),
    ("sparsity_engine", "sparsity_engine", "hdp-edge", {"head_dim": 64, "max_blocks": 64}),
    ("softmax", "softmax", "hdp-edge", {"head_dim": 64, "max_blocks": 64}),
    ("ncore seed000 (4 lanes)", "ncore", "seed000", {}),
    ("ncore hdp-server (8 PE cores)", "ncore", "hdp-server", {"head_dim": 64}),
    ("pe_array 2x4 PEs (4x8 tile, hdp-edge)", "pe_array", "hdp-edge", {"head_dim": 64}),
    ("pe_array 8x8 tile (4x4 PEs)", "pe_array", "array8", {"head_dim": 64}),
    ("pe_array 16x16 tile (8x8 PEs)", "pe_array", "array16", {"head_dim": 64}),
    ("pe_array 32x32 tile (16x16 PEs)", "pe_array", "array32", {"head_dim": 64}),
]


def run_cosim(vectors: int) -> list[dict]:
    backend = "verilator" if verilator_path() else "amaranth"
    rows = []
    for label, unit, preset, over in COSIM_CASES:
        res = cosim(unit, vectors, preset=preset, backend=backend, seed=2026, chunk=2500, **over)
        # the Python simulator on a slice of the same kind of trace, for the speed ratio
        small = max(20, vectors // 100)
        ama = cosim(unit, small, preset=preset, backend="amaranth", seed=7, **over)
        rows.append(
            {
                "unit": label,
                "backend": backend,
                "vectors": res.vectors,
                "outputs_checked": res.checked_outputs,
                "mismatches": res.mismatches,
                "bit_exact": res.ok,
                "seconds": round(res.seconds, 1),
                "amaranth_vectors": ama.vectors,
                "amaranth_mismatches": ama.mismatches,
                "amaranth_vec_per_s": round(ama.vectors / ama.seconds, 1),
                "vec_per_s": round(res.vectors / res.seconds, 1),
                "kinds": res.kinds,
            }
        )
        print(f"cosim {label}: {res.vectors} vectors, {res.mismatches} mismatches ({res.seconds:.1f} s)", file=sys.stderr, flush=True)
    return rows


def run_synth() -> list[dict]:
    rows = []
    for label, unit, preset, over in SYNTH_CASES:
        r = synth(unit, preset, **over)
        rows.append({"label": label, **r})
        print(f"synth {label}: {r['counts']} ({r['seconds']} s)", file=sys.stderr, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vectors", type=int, default=10000)
    ap.add_argument("--skip-synth", action="store_true")
    ap.add_argument("--skip-cosim", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "sparsa/hw/rtl/synth_results.json"))
    args = ap.parse_args()
    from sparsa.metrics.cpu import cpu_line

    print(cpu_line(), flush=True)  # where every figure below was measured
    torch.set_num_threads(1)
    load = os.getloadavg()[0]

    cos = [] if args.skip_cosim else run_cosim(args.vectors)
    syn = [] if args.skip_synth or yosys_command() is None else run_synth()

    print(f"\nload average at start: {load:.2f}; verilator: {verilator_path() or 'absent'}\n")
    if cos:
        print("| unit | backend | vectors | outputs checked | mismatches | s | vec/s | Amaranth vec/s (same unit) | speed-up |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in cos:
            sp = r["vec_per_s"] / max(r["amaranth_vec_per_s"], 1e-9)
            print(
                f"| {r['unit']} | {r['backend']} | {r['vectors']} | {r['outputs_checked']} | {r['mismatches']} | "
                f"{r['seconds']} | {r['vec_per_s']} | {r['amaranth_vec_per_s']} | {sp:.1f}x |"
            )
    if syn:
        print("\n| unit / size | LUT | FF | DSP | BRAM36 | LUTRAM | CARRY4 | % of seed-001 LUT | % FF | % DSP | synth s |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in syn:
            c = r["counts"]
            print(
                f"| {r['label']} | {c['lut']} | {c['ff']} | {c['dsp']} | {c['bram36']:g} | {c['lutram']} | {c['carry']} | "
                f"{100 * c['lut'] / SEED001['lut']:.3f} | {100 * c['ff'] / SEED001['ff']:.3f} | "
                f"{100 * c['dsp'] / SEED001['dsp']:.2f} | {r['seconds']} |"
            )
        print(
            f"| seed 001 FPGA totals (Swin accelerator, Table 3) | {SEED001['lut']} | {SEED001['ff']} | {SEED001['dsp']} | "
            f"{SEED001['bram36']} | – | – | 100 | 100 | 100 | – |  (URAM {SEED001['uram']})"
        )
        arrays = [r for r in syn if r["unit"] == "pe_array"]
        if len(arrays) > 1:
            base = arrays[1]
            print("\narray growth vs the 8x8 tile: " + ", ".join(
                f"{r['label'].split(' (')[0]}: LUT x{r['counts']['lut'] / max(base['counts']['lut'], 1):.2f}, "
                f"FF x{r['counts']['ff'] / max(base['counts']['ff'], 1):.2f}, DSP x{r['counts']['dsp'] / max(base['counts']['dsp'], 1):.2f}"
                for r in arrays[1:]
            ))
    if syn or cos:
        out = Path(args.out)
        old = json.loads(out.read_text()) if out.exists() else {}
        doc = {
            "about": "Yosys resource counts of the sparsa RTL units (bench/rtl_resources.py); cosim = bit-exact vector counts",
            "seed001_totals": SEED001,
            "synth": old.get("synth", {}),
            "cosim": old.get("cosim", {}),
        }
        for r in syn:
            doc["synth"][r["label"]] = {
                k: r[k] for k in ("unit", "preset", "flow", "hierarchical", "counts", "cells", "params", "seconds")
            }
        for r in cos:
            doc["cosim"][r["unit"]] = r
        atomic_write_json(out, doc)
        print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
