"""Every command on full-size models: ViT-B/16, Swin-T and VideoMAE-B, run through the CLI as a user would.

    .venv/bin/python bench/full_size.py [--only vit-b,swin-t,videomae-b] [--keep DIR] [--commands eval,hdp,...]

The models are the standard `transformers` configurations with random weights, saved with
`save_pretrained` (cost and memory do not depend on the weights' values):
ViT-B/16 `ViTConfig()` (224 px, 16 px patches, 12 x 768), Swin-T `SwinConfig()` (embed 96, depths
2,2,6,2, heads 3,6,12,24, window 7, 224 px) and VideoMAE-B `VideoMAEConfig()` (16 frames x 224 px,
tubelet 2), each with a 10-class head. The image models also run on a folder of generated 224 x 224
PNGs (64 images in 4 class folders).

Each command runs in its own process; its wall time, CPU time (user + system) and peak resident set
size come from that child's own rusage (`os.wait4`, the figure `/usr/bin/time -v` prints).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = ("vit-b", "swin-t", "videomae-b")
# PENNI's short budget on the full-size models: one retraining and one fine-tuning epoch over the
# training samples the MACs rule gives (sparsa.metrics.budget; ViT-B 37 images, VideoMAE-B 4 clips).
DECOMPOSE_ARGS = ["--retrain-epochs", "1", "--finetune-epochs", "1"]


def build_model(name: str, folder: Path) -> str:
    """A random-init standard-config classifier saved with save_pretrained; returns its path."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    if name == "vit-b":
        model = tf.ViTForImageClassification(tf.ViTConfig(num_labels=10))
    elif name == "swin-t":
        cfg = tf.SwinConfig(num_labels=10)
        assert (cfg.embed_dim, tuple(cfg.depths), tuple(cfg.num_heads), cfg.window_size, cfg.image_size) == (
            96, (2, 2, 6, 2), (3, 6, 12, 24), 7, 224), "SwinConfig() is no longer Swin-T"
        model = tf.SwinForImageClassification(cfg)
    elif name == "videomae-b":
        model = tf.VideoMAEForVideoClassification(tf.VideoMAEConfig(num_labels=10))
    else:
        raise SystemExit(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    model.eval().save_pretrained(folder)
    return str(folder)


def build_images(folder: Path, n: int = 64, classes: int = 4, size: int = 224) -> str:
    """`n` 224 x 224 PNGs in `classes` class folders: a coloured square whose position is the class."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        c = i % classes
        img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        y, x = divmod(c, 2)
        img[y * size // 2:(y + 1) * size // 2, x * size // 2:(x + 1) * size // 2, c % 3] = 230
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"class{c}" / f"{i:03d}.png")
    return str(folder)


def recipe(model: str, folder: Path) -> str:
    """A recipe naming the model: structured pruning, HDP attention, 8-bit weights, simulated on hdp-edge."""
    text = f"""name: full-size-{Path(model).name}
model: {model}
stages:
  - type: prune
    heads: 0.25
    ffn: 0.25
  - type: attention
    method: hdp
  - type: quantize
    bits: 8
    scheme: sym
    per_channel: true
evaluation:
  per_stage: false  # quality once, at the end (with HDP's emulation on, every stage's pass is costly)
hardware:
  arch: hdp-edge
"""
    path = folder / f"recipe-{Path(model).name}.yaml"
    path.write_text(text)
    return str(path)


def run(args: list[str], cwd: Path) -> dict:
    """`python -m sparsa ARGS --json` in a child: rc, wall, CPU (user + sys) and peak RSS of that child alone."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "sparsa", *args, "--json"], cwd=cwd, env=env, stdout=out,
                                stderr=err, text=True)
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    try:
        result = json.loads(stdout) if stdout.strip() else {}
    except json.JSONDecodeError:
        result = {}
    return {"rc": proc.returncode, "wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime,
            "peak_gb": ru.ru_maxrss * 1024 / 1e9, "result": result,
            "traceback": "Traceback (most recent call last)" in stderr, "stderr_tail": stderr[-1500:]}


def key_figure(command: str, r: dict) -> str:
    """The one number a row stands for (from the command's --json result)."""
    d = r.get("result") or {}
    if command.startswith("eval") and "attention" in d:
        return (f"{d.get('n_samples')} samples, attention sparsity {d.get('attention_sparsity', 0):.3f}, "
                f"agreement {d.get('top1_agreement', 0):.3f}")
    if command.startswith("eval"):
        return (f"{d.get('n_samples')} samples, agreement {d.get('top1_agreement', 0):.3f}, "
                f"MACs x{d.get('macs_ratio', 0):.3f}, latency x{d.get('latency_ratio', 0):.3f} ({d.get('latency_runs')} runs)")
    if command == "decompose":
        return (f"{len(d.get('decomposed', []))} layers decomposed, MACs -{100 * d.get('mac_reduction', 0):.1f}%, "
                f"samples {d.get('samples')}")
    if command == "prune":
        return f"MACs x{d.get('macs_ratio', 0):.3f}"
    if command == "run":
        f = d.get("final") or {}
        q = f.get("quality") or {}
        hw = d.get("hardware") or {}
        return (f"{q.get('data', '')}: acc {q.get('value', float('nan')):.3f}, MACs x"
                f"{(f.get('ratios') or {}).get('macs_ratio', float('nan')):.3f}, sim speedup {hw.get('speedup', float('nan')):.3f}"
                f" (seq {hw.get('seq_len')})")
    return ""


def commands(name: str, base: Path) -> list[tuple[str, list[str]]]:
    m, p = str(base / name), str(base / f"{name}-pruned")
    rows = [("prune", ["prune", m, "--heads", "0.25", "--ffn", "0.25", "--out", p, "--overwrite"]),
            ("eval --reference", ["eval", p, "--reference", m])]
    if name != "videomae-b":
        rows.append(("eval --reference --data images", ["eval", p, "--reference", m, "--data", str(base / "images")]))
    rows.append(("eval --attention hdp", ["eval", m, "--attention", "hdp"]))
    # ViT reads its patch projection's weight directly, so PENNI keeps it plain: its Linears are what decomposes
    rows.append(("decompose", ["decompose", m, "--method", "penni", *DECOMPOSE_ARGS,
                               *(["--linear"] if name == "vit-b" else []), "--out", str(base / f"{name}-penni"),
                               "--overwrite"]))
    rows.append(("run", ["run", recipe(m, base), "--out", str(base / f"{name}-run"), "--overwrite", "--no-html"]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(MODELS), help=f"comma-separated, in order: {', '.join(MODELS)}")
    ap.add_argument("--commands", default="", help="comma-separated row names to run (default: all); "
                                                   "prune always runs first when an eval needs its folder")
    ap.add_argument("--keep", type=Path, help="build (and keep) the folders here instead of a temp dir")
    a = ap.parse_args()
    from sparsa.metrics.cpu import cpu_line

    print(cpu_line())
    print(f"load average at start: {os.getloadavg()[0]:.1f} (the figures are inflated by anything else running)")
    header = f"{'model':<11} {'command':<31} {'rc':>3} {'wall s':>8} {'CPU s':>8} {'peak GB':>8}  result"
    print(header, flush=True)
    failed = False
    with tempfile.TemporaryDirectory(prefix="sparsa-full-size-") as tmp:
        base = a.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        if not (base / "images").exists():
            build_images(base / "images")
        wanted = [c for c in a.commands.split(",") if c]
        for name in a.only.split(","):
            if not (base / name / "config.json").exists():
                build_model(name, base / name)
            for label, args in commands(name, base):
                if wanted and label not in wanted and not (label == "prune" and not (base / f"{name}-pruned").exists()):
                    continue
                r = run(args, base)
                if label == "run" and (base / f"{name}-run" / "results.json").exists():  # --json prints a summary
                    r["result"] = json.loads((base / f"{name}-run" / "results.json").read_text())
                failed |= r["rc"] != 0 or r["traceback"]
                print(f"{name:<11} {label:<31} {r['rc']:>3} {r['wall_s']:>8.1f} {r['cpu_s']:>8.1f} {r['peak_gb']:>8.2f}  "
                      f"{key_figure(label.split(' --data')[0] if label.startswith('eval --reference') else label, r)}",
                      flush=True)
                if r["rc"] != 0 or r["traceback"]:
                    print("    " + r["stderr_tail"].strip().replace("\n", "\n    "), flush=True)
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
