"""sparsa's simulator vs SCALE-Sim v3.0.0 on dense GEMMs: cycle error per GEMM and wall-time ratio.

    .venv/bin/python bench/sim_vs_scalesim.py            # default set: 44 dense + 5 memory-limited GEMMs (cached)
    .venv/bin/python bench/sim_vs_scalesim.py --quick    # a few GEMMs only
    .venv/bin/python bench/sim_vs_scalesim.py --full     # + two memory-limited GEMMs SCALE-Sim needs ~1 h for

SCALE-Sim runs in its own environment `.venv-scalesim` (scalesim 3.0.0 crashes with numpy >= 2.4);
this script creates it when missing (`make bench-deps` does the same). Its results are cached in
bench/_work/scalesim_cache.json keyed by the full job (shape, array, dataflow, SRAM sizes,
bandwidth), so reruns only time sparsa; the SCALE-Sim wall time shown is the one measured when the
job first ran.

Compute-bound set: SCALE-Sim's CALC mode (no read stalls). Memory-limited set: USER mode with
the given words/cycle on every interface and small SRAMs, so that SCALE-Sim reports stall cycles.
The figure compared is SCALE-Sim's "Total Cycles" (compute + stalls, COMPUTE_REPORT.csv).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORK = ROOT / "bench" / "_work"
CACHE = WORK / "scalesim_cache.json"
VENV = ROOT / ".venv-scalesim"
RUNNER = ROOT / "bench" / "scalesim" / "runner.py"


def ensure_scalesim() -> Path:
    py = VENV / "bin" / "python"
    if py.exists():
        return py
    print("creating .venv-scalesim (scalesim 3.0.0, numpy<2.4) ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "scalesim==3.0.0", "numpy<2.4"], check=True)
    return py


def _key(job: dict) -> str:
    return hashlib.sha1(json.dumps(job, sort_keys=True).encode()).hexdigest()[:16]


def run_scalesim(jobs: list[dict]) -> list[dict]:
    cache = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    todo = [j for j in jobs if _key(j) not in cache]
    if todo:
        py = ensure_scalesim()
        for i, job in enumerate(todo):  # one job per process call: progress + partial caching
            print(f"  SCALE-Sim {i + 1}/{len(todo)}: {job}", file=sys.stderr, flush=True)
            out = subprocess.run([str(py), str(RUNNER)], input=json.dumps([job]), capture_output=True, text=True,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"})
            if out.returncode != 0:
                raise SystemExit(f"SCALE-Sim failed on {job}:\n{out.stderr[-2000:]}")
            cache[_key(job)] = {"job": job, **json.loads(out.stdout)[0]}
            WORK.mkdir(parents=True, exist_ok=True)
            tmp = CACHE.with_suffix(".tmp")
            tmp.write_text(json.dumps(cache, indent=1))
            tmp.replace(CACHE)
    return [cache[_key(j)] for j in jobs]


def arch_for(job: dict):
    from sparsa.hw.arch import load_arch

    s0, s1, s2 = job["sram_kb"]
    d = {
        "name": f"scalesim-{job['rows']}x{job['cols']}-{job['dataflow']}", "clock_hz": 1e9,
        "array": {"rows": job["rows"], "cols": job["cols"], "dataflow": job["dataflow"]},
        "bits": {"operand_bits": 8, "output_bits": 8},  # SCALE-Sim's word is one byte
        "buffers": {"ifmap_kb": s0, "filter_kb": s1, "ofmap_kb": s2},
        "dram": {"memory_model": "scalesim"} if job.get("bandwidth") is None else
                {"memory_model": "scalesim", "bandwidth_bytes_per_cycle": job["bandwidth"], "per_interface": True},
    }
    return load_arch(d)


def sparsa_cycles(job: dict, repeats: int = 20) -> tuple[int, int, float]:
    from sparsa.hw.sim import simulate_gemm

    arch = arch_for(job)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = simulate_gemm(job["M"], job["K"], job["N"], arch)
        times.append(time.perf_counter() - t0)
    return r.detail["scalesim_total_cycles"], r.stall_cycles, statistics.median(times)


# (name, M, K, N): seq 64 keeps SCALE-Sim's run time to minutes; K and N are the real layer widths.
# BERT-base's FFN GEMMs (64x768x3072) are left out: ~3 min each in SCALE-Sim on 32x32.
BERT_BASE = [("bert.qkv", 64, 768, 768), ("bert.qk_head", 64, 64, 64), ("bert.pv_head", 64, 64, 64)]
MINILM = [("minilm.qkv", 64, 384, 384), ("minilm.ffn1", 64, 384, 1536), ("minilm.ffn2", 64, 1536, 384),
          ("minilm.qk_head", 64, 32, 64), ("minilm.pv_head", 64, 64, 32)]
MORE = [("odd", 100, 37, 53), ("tall", 300, 20, 10), ("vit.patch", 197, 48, 96)]
DENSE_ARRAYS = [(32, "os"), (32, "ws"), (128, "os"), (128, "ws")]
BIG_SRAM = [256, 256, 128]
# memory-limited: small SRAMs (KiB) and a few words/cycle on each interface
MEM = [
    ("minilm.qkv", 64, 384, 384, 32, "os", [8, 8, 8], 4),
    ("minilm.qkv", 64, 384, 384, 32, "ws", [8, 8, 8], 4),
    ("bert.qkv", 64, 768, 768, 32, "os", [16, 16, 16], 8),
    ("mid", 64, 100, 64, 8, "os", [1, 1, 1], 2),
    ("mid", 64, 100, 64, 8, "ws", [1, 1, 1], 2),
]
# SCALE-Sim needs ~15 and ~60 min of wall time for these on a loaded 2-core machine: only with --full
MEM_SLOW = [
    ("minilm.ffn1", 64, 384, 1536, 32, "os", [16, 16, 16], 8),
    ("bert.qkv", 64, 768, 768, 32, "ws", [16, 16, 16], 8),
]


def build_jobs(quick: bool, full: bool = False) -> tuple[list, list]:
    dense = []
    shapes = BERT_BASE + MINILM + MORE
    arrays = DENSE_ARRAYS
    if quick:
        shapes, arrays = [BERT_BASE[0], MINILM[3], MORE[0]], [(32, "os"), (32, "ws")]
    for size, df in arrays:
        for name, m, k, n in shapes:
            dense.append((name, {"M": m, "K": k, "N": n, "rows": size, "cols": size, "dataflow": df,
                                 "sram_kb": BIG_SRAM, "bandwidth": None}))
    mem = [(name, {"M": m, "K": k, "N": n, "rows": a, "cols": a, "dataflow": df, "sram_kb": kb, "bandwidth": bw})
           for name, m, k, n, a, df, kb, bw in (MEM[-2:] if quick else MEM + MEM_SLOW if full else MEM)]
    return dense, mem


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="3 shapes on 32x32 and the two 8x8 memory cases (~2 min)")
    ap.add_argument("--full", action="store_true", help="add the two slowest memory-limited GEMMs (SCALE-Sim: ~1 h)")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    ap.add_argument("--cached-only", action="store_true", help="skip GEMMs SCALE-Sim has not run yet (no new runs)")
    args = ap.parse_args()
    from sparsa.metrics.cpu import cpu_line

    print(cpu_line(), flush=True)  # where every figure below was measured
    dense, mem = build_jobs(args.quick, args.full)
    if args.cached_only:
        cache = json.loads(CACHE.read_text()) if CACHE.exists() else {}
        missing = [j for _, j in dense + mem if _key(j) not in cache]
        for j in missing:
            print(f"not in the SCALE-Sim cache, skipped: {j}", file=sys.stderr)
        dense = [(n, j) for n, j in dense if _key(j) in cache]
        mem = [(n, j) for n, j in mem if _key(j) in cache]
    ref = run_scalesim([j for _, j in dense + mem])
    rows = []
    for (name, job), r in zip(dense + mem, ref):
        ours, ours_stall, t = sparsa_cycles(job)
        err = (ours - r["total_cycles"]) / r["total_cycles"]
        rows.append({"gemm": name, **job, "scalesim_cycles": r["total_cycles"], "scalesim_stalls": r["stall_cycles"],
                     "sparsa_cycles": ours, "sparsa_stalls": ours_stall, "error": err,
                     "scalesim_wall_s": r["wall_s"], "sparsa_wall_s": t, "memory_limited": job["bandwidth"] is not None})
    print("| set | GEMM (M,K,N) | array | df | SRAM KiB | bw w/c | SCALE-Sim cycles (stalls) | sparsa cycles (stalls) | error | SCALE-Sim s | sparsa ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for x in rows:
        print(f"| {'memory' if x['memory_limited'] else 'dense'} | {x['gemm']} ({x['M']},{x['K']},{x['N']}) | "
              f"{x['rows']}x{x['cols']} | {x['dataflow']} | {'/'.join(map(str, x['sram_kb']))} | {x['bandwidth'] or 'CALC'} | "
              f"{x['scalesim_cycles']} ({x['scalesim_stalls']}) | {x['sparsa_cycles']} ({x['sparsa_stalls']}) | "
              f"{100 * x['error']:+.2f}% | {x['scalesim_wall_s']:.2f} | {1000 * x['sparsa_wall_s']:.3f} |")
    d = [x for x in rows if not x["memory_limited"]]
    m = [x for x in rows if x["memory_limited"]]
    wall_ss = sum(x["scalesim_wall_s"] for x in rows)
    wall_us = sum(x["sparsa_wall_s"] for x in rows)
    print()
    print(f"dense GEMMs: {len(d)}, max |error| {100 * max(abs(x['error']) for x in d):.3f}%"
          f" -> {'PASS' if all(abs(x['error']) <= 0.01 for x in d) else 'FAIL'} (<= 1%)")
    if m:
        print(f"memory-limited GEMMs: {len(m)}, max |error| {100 * max(abs(x['error']) for x in m):.2f}%, "
              f"within 10%: {sum(abs(x['error']) <= 0.10 for x in m)}/{len(m)}")
    print(f"wall time over the whole set: SCALE-Sim {wall_ss:.1f} s, sparsa {1000 * wall_us:.1f} ms -> "
          f"{wall_ss / wall_us:.0f}x faster (needs >= 100x); load average {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
