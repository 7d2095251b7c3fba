"""Simulated MACs vs the flop counter's, for every supported family at full size.

    .venv/bin/python bench/sim_macs.py [--arch swin-fpga] [--only swin-t,vit-b16]

For each standard config (random-init weights: cost does not depend on their values), the model is
saved with `save_pretrained` to a temporary folder and run through the CLI exactly as a user would:
`sparsa info DIR --json` (torch's flop counter at the stated input) and `sparsa sim DIR --arch ARCH
--json` (the workload traced from the same forward pass). Acceptance: ratio within 1% of 1.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def configs():
    import transformers as tf

    return {
        "bert-base (seq 128)": lambda: tf.BertModel(tf.BertConfig()),
        "distilbert-base (seq 128)": lambda: tf.DistilBertModel(tf.DistilBertConfig()),
        "vit-b16 224²": lambda: tf.ViTForImageClassification(tf.ViTConfig(num_labels=1000)),
        "deit-b 224²": lambda: tf.DeiTForImageClassification(tf.DeiTConfig(num_labels=1000)),
        "swin-t 224²": lambda: tf.SwinForImageClassification(tf.SwinConfig(num_labels=1000)),
        "videomae-b 16x224²": lambda: tf.VideoMAEForVideoClassification(tf.VideoMAEConfig(num_labels=400)),
    }


def cpu_line() -> str:
    model, flags = platform.processor() or platform.machine(), ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^(model name|Hardware)\s*:\s*(.+)$", text, re.M)
        model = m.group(2) if m else model
        f = re.search(r"^(flags|Features)\s*:\s*(.+)$", text, re.M)
        keep = re.compile(r"^(avx2|fma|avx512f|avx512bw|avx512vl|avx512_vnni|avx512_bf16|avx_vnni|amx.*|asimd|asimddp|sve|sve2|i8mm|bf16)$")
        flags = " ".join(sorted({x for x in (f.group(2).split() if f else []) if keep.match(x)}))
    except OSError:
        pass
    return f"cpu: {platform.machine()}, {model}; features: {flags or 'n/a'}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="swin-fpga")
    ap.add_argument("--only", default="", help="comma-separated substrings of the config names")
    args = ap.parse_args()
    import torch
    from typer.testing import CliRunner

    from sparsa.cli import app

    torch.manual_seed(0)
    runner = CliRunner()
    print(cpu_line())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; arch {args.arch}\n")
    print("| model | input | info MACs | sim MACs | sim / info | not simulated | sim latency | trace+sim s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, build in configs().items():
        if args.only and not any(s and s in name for s in args.only.split(",")):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            build().eval().save_pretrained(tmp)
            info = runner.invoke(app, ["info", tmp, "--json"])
            if info.exit_code:
                raise SystemExit(f"{name}: sparsa info failed: {info.output}")
            t0 = time.perf_counter()
            sim = runner.invoke(app, ["sim", tmp, "--arch", args.arch, "--json"])
            dt = time.perf_counter() - t0
            if sim.exit_code:
                raise SystemExit(f"{name}: sparsa sim failed: {sim.output}")
        i, s = json.loads(info.stdout), json.loads(sim.stdout)
        ns = s["workload"].get("not_simulated") or []
        print(f"| {name} | {i['macs_input']} | {i['macs']:,} | {s['macs']:,} | {s['macs'] / i['macs']:.6f} "
              f"| {', '.join(d['name'] for d in ns) or '-'} | {s['latency_s'] * 1e3:.4g} ms | {dt:.1f} |", flush=True)


if __name__ == "__main__":
    main()
