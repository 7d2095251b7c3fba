"""What `sparsa sim --attention hdp` costs on a full-size model: wall time, CPU time and peak RSS of the
whole command (model load, the HDP emulation forward that records the masks, the traced forward, the
two simulations), run as a user runs it, in fresh processes: once with an empty numba cache (the
kernels compile: a first run without `make install`), then `--repeat` times warm; then the same steps phase by phase (wall,
CPU, RSS after each) in another fresh process, for the current code and for the plain forms it
replaces (int64 HDP emulation, traced forward on real tensors), whose JSON output must be identical.

    .venv/bin/python bench/sim_cost.py                      # VideoMAE-B (16x224², 1,568 tokens), random init
    .venv/bin/python bench/sim_cost.py --model FOLDER_OR_NAME
    .venv/bin/python bench/sim_cost.py --no-plain           # skip the plain-form baseline (minutes)

The default model is `transformers.VideoMAEConfig()` (its defaults: 16 frames, 224², tubelet 2) with
random weights (seed 0), saved with `save_pretrained` to a temporary folder. On shared machines the
wall time depends on the load: the load average is printed beside it, and the CPU time with it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.sim_macs import cpu_line  # noqa: E402


def videomae_b(folder: Path) -> Path:
    import torch
    import transformers as tf

    torch.manual_seed(0)
    tf.VideoMAEForVideoClassification(tf.VideoMAEConfig(num_labels=400)).save_pretrained(folder)
    return folder


def measure(model: str, arch: str, numba_cache: str | None = None) -> dict:
    cmd = [sys.executable, "-m", "sparsa", "sim", model, "--arch", arch, "--attention", "hdp", "--json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if numba_cache:  # an empty cache: the run compiles HDP's numba kernels, as a first run without `make install` does
        env["NUMBA_CACHE_DIR"] = numba_cache
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return {"wall_s": wall, "user_s": after.ru_utime - before.ru_utime, "sys_s": after.ru_stime - before.ru_stime,
            "peak_rss_gb": after.ru_maxrss * 1024 / 1e9, "load_before": load, "load_after": os.getloadavg()[0]}


def phases(model: str, arch: str, plain: bool, out_json: str) -> None:
    """Child process: the steps of `sparsa sim MODEL --attention hdp` one by one, one line per phase."""
    t0, c0 = time.perf_counter(), time.process_time()

    def done(name: str) -> None:
        nonlocal t0, c0
        t, c = time.perf_counter(), time.process_time()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
        print(json.dumps({"phase": name, "wall_s": t - t0, "cpu_s": c - c0, "peak_rss_gb": rss}), flush=True)
        t0, c0 = t, c

    import torch

    import sparsa.cli.sim_cmds  # noqa: F401 - the command's own imports
    from sparsa.attention import collect_masks
    from sparsa.hw.arch import load_arch
    from sparsa.hw.sim import simulate
    from sparsa.hw.workload import from_model, trace_loaded
    from sparsa.models import load

    if plain:  # the forms the current code replaces: int64 HDP emulation, traced forward on real tensors
        import sparsa.attention.hdp as hdp
        import sparsa.hw.trace as trace

        hdp.FAST_PATH = False
        trace.trace_model.__kwdefaults__["shapes_only"] = False
    else:
        import sparsa.attention.hdp_rows  # noqa: F401 - numba, as the command imports it
    done("imports")
    loaded = load(model)
    inputs = loaded.example_inputs(batch=1)
    done("model load")
    tr = trace_loaded(loaded, inputs)
    dense_wl = from_model(loaded, inputs=inputs, trace=tr)
    done("traced forward")
    masks = collect_masks(loaded, inputs, "hdp")
    done("HDP emulation forward (records the masks)")
    wl = from_model(loaded, masks=masks, inputs=inputs, trace=tr)
    a = load_arch(arch)
    res, dense_res = simulate(wl, a), simulate(dense_wl, a)
    done("workloads + both simulations")
    out = {"cycles": res.cycles, "dense_cycles": dense_res.cycles, "layers": res.per_layer(),
           "workload": wl.summary(), "threads": torch.get_num_threads()}
    Path(out_json).write_text(json.dumps(out, sort_keys=True, default=str))


def measure_phases(model: str, arch: str, plain: bool, out_json: Path) -> tuple[list[dict], float]:
    cmd = [sys.executable, __file__, "--phases-of", model, "--arch", arch, "--out", str(out_json)] + (["--plain"] if plain else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return rows, after.ru_maxrss * 1024 / 1e9 if after.ru_maxrss > before.ru_maxrss else rows[-1]["peak_rss_gb"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="model name or folder (default: a random-init VideoMAE-B)")
    ap.add_argument("--arch", default="hdp-edge")
    ap.add_argument("--no-plain", action="store_true", help="skip the plain-form baseline")
    ap.add_argument("--repeat", type=int, default=3, help="warm runs of the whole command")
    ap.add_argument("--phases-of", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phases_of:
        phases(args.phases_of, args.arch, args.plain, args.out)
        return
    print(cpu_line())
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(videomae_b(Path(tmp) / "videomae-b"))
        name = args.model or "videomae-b 16x224² (1,568 tokens)"
        print(f"sparsa sim {name} --arch {args.arch} --attention hdp --json, each run a fresh process")
        cold_dir = Path(tmp) / "numba-cache"
        cold_dir.mkdir()
        runs = [("numba cache empty (compiles)", measure(model, args.arch, str(cold_dir)))]
        measure(model, args.arch)  # fills the default cache if `make install` has not
        runs += [(f"warm run {i + 1}", measure(model, args.arch)) for i in range(args.repeat)]
        print("| run | wall s | CPU user s | CPU sys s | peak RSS GB | load average before / after |")
        print("|---|---|---|---|---|---|")
        for label, r in runs:
            print(f"| {label} | {r['wall_s']:.2f} | {r['user_s']:.1f} | {r['sys_s']:.1f} | {r['peak_rss_gb']:.2f} | "
                  f"{r['load_before']:.1f} / {r['load_after']:.1f} |")
        warm = statistics.median(r["wall_s"] for _, r in runs[1:])
        print(f"warm median {warm:.2f} s wall, peak RSS {max(r['peak_rss_gb'] for _, r in runs):.2f} GB")
        runs = [("current", False)] + ([] if args.no_plain else [("plain forms", True)])
        table, outputs = {}, {}
        for label, plain in runs:
            out = Path(tmp) / f"{'plain' if plain else 'current'}.json"
            table[label] = measure_phases(model, args.arch, plain, out)
            outputs[label] = out.read_text()
    print(f"\nphases, each run in a fresh process (load average now {os.getloadavg()[0]:.1f}):")
    print("| phase | " + " | ".join(f"{lab} wall s | {lab} CPU s | {lab} RSS GB after" for lab in table) + " |")
    print("|---|" + "---|---|---|" * len(table))
    for i, row in enumerate(next(iter(table.values()))[0]):
        cells = []
        for rows, _ in table.values():
            p = rows[i]
            cells += [f"{p['wall_s']:.2f}", f"{p['cpu_s']:.2f}", f"{p['peak_rss_gb']:.2f}"]
        print(f"| {row['phase']} | " + " | ".join(cells) + " |")
    totals = {lab: (sum(p["wall_s"] for p in rows), sum(p["cpu_s"] for p in rows)) for lab, (rows, _) in table.items()}
    print("| total | " + " | ".join(f"{w:.2f} | {c:.2f} | {table[lab][1]:.2f} (peak)" for lab, (w, c) in totals.items()) + " |")
    if len(table) == 2:
        (wc, cc), (wp, cp) = totals["current"], totals["plain forms"]
        print(f"plain / current: wall {wp / wc:.1f}x, CPU {cp / cc:.1f}x; "
              f"simulation output identical: {'yes' if outputs['current'] == outputs['plain forms'] else 'NO'}")


if __name__ == "__main__":
    main()
