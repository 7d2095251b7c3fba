"""What `sparsa sim --attention hdp` costs on a full-size model: wall time, CPU time and peak RSS of the
whole command (model load, the HDP emulation forward that records the masks, the traced forward, the
two simulations), run as a user runs it, in a fresh process.

    .venv/bin/python bench/sim_cost.py                      # VideoMAE-B (16x224², 1,568 tokens), random init
    .venv/bin/python bench/sim_cost.py --model FOLDER_OR_NAME

The default model is `transformers.VideoMAEConfig()` (its defaults: 16 frames, 224², tubelet 2) with
random weights (seed 0), saved with `save_pretrained` to a temporary folder. On shared machines the
wall time depends on the load: the load average is printed beside it, and the CPU time with it.
"""

from __future__ import annotations

import argparse
import os
import resource
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


def measure(model: str, arch: str) -> dict:
    cmd = [sys.executable, "-m", "sparsa", "sim", model, "--arch", arch, "--attention", "hdp", "--json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="model name or folder (default: a random-init VideoMAE-B)")
    ap.add_argument("--arch", default="hdp-edge")
    args = ap.parse_args()
    print(cpu_line())
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(videomae_b(Path(tmp) / "videomae-b"))
        name = args.model or "videomae-b 16x224² (1,568 tokens)"
        r = measure(model, args.arch)
    print(f"sparsa sim {name} --arch {args.arch} --attention hdp --json")
    print(f"wall {r['wall_s']:.1f} s | CPU {r['user_s']:.1f} s user + {r['sys_s']:.1f} s sys | "
          f"peak RSS {r['peak_rss_gb']:.2f} GB | load average {r['load_before']:.1f} before, {r['load_after']:.1f} after")


if __name__ == "__main__":
    main()
