"""Dynamic attention pruning: quality vs achieved sparsity, HDP against its baselines.

    .venv/bin/python bench/attention_quality.py [--quick] [--models minilm,tiny-vit,tiny-swin]

MiniLM (real all-MiniLM-L6-v2): mean-pooled embedding cosine vs the dense model on the built-in
held-out sentences (every other one with --quick) (`sparsa.data.text.EVAL_SENTENCES`; sparsa's `hdp` default was chosen on the
corpus' calibration split, never on these). tiny-vit / tiny-swin fixtures (when trained, under
sparsa/fixtures/): top-1 accuracy on the whole digits test split (359 images; --quick too). `hdp`
runs with its per-family default rule (`sparsa.attention.methods.HDP_FAMILY_DEFAULTS`) and sweeps
that rule's knob; the other hdp rule is swept as its own row. Each method's knob is swept; the
x axis is the achieved attention sparsity (pruned valid score elements / all, pruned heads
counted whole). Writes bench/results/attention_quality.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results"

# (label, method, fixed opts, knob, values): values chosen to span ~20–97% sparsity
SWEEPS = [
    ("hdp", "hdp", {}, "gap", [24, 15, 11, 7, 4, 1]),
    ("hdp b=2", "hdp", {"block": 2}, "gap", [24, 14, 10, 6, 3, 0]),
    ("hdp b=4", "hdp", {"block": 4}, "gap", [16, 8, 4, 0]),
    ("hdp drop", "hdp", {"pruned": "drop"}, "gap", [24, 15, 11, 7, 4, 1]),
    ("hdp b=2 max", "hdp", {"block": 2, "importance": "max"}, "gap", [24, 14, 10, 6, 3, 0]),
    ("hdp rowmax-gap", "hdp", {"importance": "rowmax", "threshold": "gap"}, "gap", [24, 15, 11, 7, 4, 1]),
    ("hdp signed-rho b=1", "hdp", {"importance": "signed", "threshold": "rho"}, "rho_b",
     [-0.25, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
    ("hdp-seed", "hdp-seed", {}, "rho_b", [-0.5, 0.0, 0.25, 0.5, 1.0]),
    ("hdp-seed b=1", "hdp-seed", {"block": 1}, "rho_b", [-0.5, 0.0, 0.5, 1.0]),
    ("hdp signed-rho", "hdp-seed", {"importance": "signed"}, "rho_b", [-0.25, 0.0, 0.25, 0.5]),
    ("topk", "topk", {}, "ratio", [0.5, 0.7, 0.8, 0.9, 0.95]),
    ("topk-element", "topk-element", {}, "ratio", [0.5, 0.7, 0.8, 0.9, 0.95]),
    ("topk-element mean", "topk-element", {"pruned": "mean", "split": "round"}, "ratio", [0.5, 0.7, 0.8, 0.9, 0.95]),
    ("energon", "energon", {}, "rho_b", [-0.25, 0.0, 0.25, 0.5]),
    ("spatten", "spatten", {}, "ratio", [0.25, 0.5, 0.75]),
]
QUICK = {"hdp", "hdp b=2", "hdp b=4", "hdp drop", "hdp b=2 max", "hdp rowmax-gap", "hdp signed-rho b=1", "hdp-seed", "topk", "topk-element",
         "energon", "spatten"}
RHO_VALUES = [-0.25, 0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]  # hdp's ρ_B sweep where its rule is the ρ_B rule


def sweep_model(name, quick=False, log=print):
    import torch

    from sparsa.attention import install, uninstall
    from sparsa.attention.methods import knob_for, make_config
    from sparsa.models import load

    lm = load(name)
    model = lm.model.eval()
    if lm.family == "bert":
        from sparsa.data.text import EVAL_SENTENCES
        from sparsa.metrics.quality import embed

        texts = list(EVAL_SENTENCES)[:: 2 if quick else 1]
        ref = embed(model, texts, lm.tokenizer)

        def quality():
            e = embed(model, texts, lm.tokenizer)
            return float(torch.nn.functional.cosine_similarity(e, ref, dim=-1).mean())

        metric = "cosine"
    else:
        from sparsa.data import load_dataset
        from sparsa.metrics.quality import predict_logits

        ds = load_dataset("clips" if lm.family == "videomae" else "digits", split="test")
        acc_dense = float((predict_logits(lm, ds.x).argmax(-1) == ds.y).float().mean())

        def quality():
            return 100 * float((predict_logits(lm, ds.x).argmax(-1) == ds.y).float().mean())

        metric = "accuracy"
    base = quality() if metric == "accuracy" else 1.0
    rows = []
    for label, method, fixed, knob, values in SWEEPS:
        if quick and label not in QUICK:
            continue
        if method == "hdp" and label.startswith("hdp ") and "block" not in fixed and \
                make_config(method, lm.family, **fixed) == make_config(method, lm.family):
            continue  # this rule *is* the family's hdp default: already the "hdp" row
        if label in ("hdp", "hdp b=2", "hdp b=4", "hdp drop", "hdp b=2 max"):
            knob = knob_for(method, lm.family, **fixed)
            if knob == "rho_b":
                values = RHO_VALUES
        if metric == "accuracy" and knob == "gap":  # vision Q·K scales differ: a wider grid
            values = [64, 32, 16, 8, 4, 2, 1, 0]
        for val in values:
            ctrl = install(model, method, **{**fixed, knob: val})
            t = time.time()
            try:
                with torch.no_grad():
                    q = quality()
            finally:
                uninstall(model)
            tot = ctrl.totals()
            row = dict(model=name, label=label, method=method, knob=knob, value=val, quality=q,
                       attention_sparsity=tot["attention_sparsity"], block_sparsity=tot["block_sparsity"],
                       head_sparsity=tot["head_sparsity"], seconds=time.time() - t)
            rows.append(row)
            log(f"{name:10s} {label:15s} {knob}={val:<6} sparsity={row['attention_sparsity']:.3f} {metric}={q:.4f}")
    return dict(model=name, metric=metric, dense=base, rows=rows)


def at_sparsity(rows, label, s):
    """Quality interpolated at attention sparsity s (None outside the measured range)."""
    pts = sorted((r["attention_sparsity"], r["quality"]) for r in rows if r["label"] == label)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= s <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (s - x0) / (x1 - x0)
    return None


def max_sparsity(rows, label, ok):
    """Largest sparsity reached (linear interpolation between measured points) with ok(quality)."""
    pts = sorted((r["attention_sparsity"], r["quality"]) for r in rows if r["label"] == label)
    best = None
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if ok(y0):
            best = x0
            if not ok(y1) and y1 != y0:
                # solve along the segment for the crossing
                for t in [i / 100 for i in range(101)]:
                    if ok(y0 + (y1 - y0) * t):
                        best = x0 + (x1 - x0) * t
    if pts and ok(pts[-1][1]):
        best = pts[-1][0]
    return best


def table(res) -> str:
    levels = [0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 0.95]
    rows = res["rows"]
    labels = list(dict.fromkeys(r["label"] for r in rows))
    metric = res["metric"]
    if metric == "cosine":
        crit = ("max sparsity @ cos≥0.98", lambda q: q >= 0.98)
    else:
        crit = ("max sparsity @ ≤1 pt loss", lambda q, d=res["dense"]: q >= d - 1.0)
    head = f"| {res['model']} ({metric}) | " + " | ".join(f"{int(100 * s)}%" for s in levels) + f" | {crit[0]} |"
    lines = [head, "|" + "---|" * (len(levels) + 2)]
    for lab in labels:
        cells = []
        for s in levels:
            v = at_sparsity(rows, lab, s)
            cells.append("–" if v is None else (f"{v:.4f}" if metric == "cosine" else f"{v:.1f}"))
        ms = max_sparsity(rows, lab, crit[1])
        lines.append(f"| {lab} | " + " | ".join(cells) + f" | {'–' if ms is None else f'{100 * ms:.1f}%'} |")
    if metric == "accuracy":
        lines.append(f"\ndense accuracy: {res['dense']:.1f}%")
    lines.append(behind(res))
    return "\n".join(lines)


def behind(res) -> str:
    """Where each Top-K variant first falls behind `hdp` (by more than 1 point / 0.01 cosine), on a 1% grid."""
    margin = 0.01 if res["metric"] == "cosine" else 1.0
    out = []
    for lab in ("topk", "topk-element"):
        first = None
        for i in range(20, 100):
            h, t = at_sparsity(res["rows"], "hdp", i / 100), at_sparsity(res["rows"], lab, i / 100)
            if h is not None and t is not None and h - t > margin:
                first = i
                break
        out.append(f"{lab} falls behind hdp from {first}% on" if first else f"{lab} never falls behind hdp (measured range)")
    return "\n" + "; ".join(out) + f" (margin {margin:g})"


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for ax, res in zip(axes[0], results):
        labels = list(dict.fromkeys(r["label"] for r in res["rows"]))
        for lab in labels:
            pts = sorted((r["attention_sparsity"], r["quality"]) for r in res["rows"] if r["label"] == lab)
            ax.plot([100 * p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=lab,
                    lw=2.5 if lab == "hdp" else 1.2)
        ax.set_xlabel("attention sparsity (%)")
        ax.set_ylabel("embedding cosine" if res["metric"] == "cosine" else "top-1 accuracy (%)")
        ax.set_title(res["model"])
        if res["metric"] == "cosine":
            ax.set_ylim(0.8, 1.001)
            ax.axhline(0.98, color="grey", ls=":")
        else:
            ax.axhline(res["dense"] - 1, color="grey", ls=":")
        ax.set_xlim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer sweeps (hdp, hdp b=2, hdp-seed, topk, energon, spatten)")
    ap.add_argument("--models", default="minilm,tiny-vit,tiny-swin")
    args = ap.parse_args()
    from sparsa.metrics.cpu import cpu_line

    print(cpu_line(), flush=True)  # where every figure below was measured
    import torch

    # one thread: on a shared 2-core machine a second intra-op thread mostly waits at barriers
    torch.set_num_threads(1)
    from sparsa.errors import SparsaError
    from sparsa.io import atomic_write_json, atomic_write_text

    OUT.mkdir(parents=True, exist_ok=True)
    for name in args.models.split(","):
        try:
            res = sweep_model(name, args.quick)
        except SparsaError as e:  # a fixture not trained yet
            print(f"skipping {name}: {e.message}")
            continue
        atomic_write_json(OUT / f"attention_quality_{name}.json", res)
    # the report covers every model measured so far (models can be run by separate invocations)
    results = [json.loads(p.read_text()) for p in sorted(OUT.glob("attention_quality_*.json"))]
    md = [f"load average at end: {os.getloadavg()[0]:.1f}", ""]
    for res in results:
        md += [table(res), ""]
    text = "\n".join(md)
    print(text)
    atomic_write_text(OUT / "attention_quality.md", text + "\n")
    if results:
        plot(results, OUT / "attention_quality.png")


if __name__ == "__main__":
    main()
