"""The pruning demo: the real MiniLM at 50% heads + 50% FFN, dense vs pruned.

    python -m sparsa.demo_prune [--importance activation] [--runs 30] [--threads 2] [--out DIR]

Prints params, MACs, measured latency (interleaved runs in one process) and embedding fidelity
(mean-pooled cosine vs the dense model on the built-in held-out sentences).
`run_demo()` returns the same figures as a dict for the pipeline to reuse.
"""

from __future__ import annotations

import argparse


def run_demo(heads: float = 0.5, ffn: float = 0.5, importance: str = "activation", runs: int = 30,
             threads: int = 2, seq_len: int = 128, out: str | None = None, log=print) -> dict:
    from sparsa.data.text import EVAL_SENTENCES
    from sparsa.metrics import count_macs, count_params, fidelity, measure_latency_pair
    from sparsa.models import load
    from sparsa.prune import PrunePlan, prune

    log("loading the real all-MiniLM-L6-v2 (`minilm`) ...")
    dense = load("minilm")
    plan = PrunePlan(heads=heads, ffn=ffn, importance=importance)
    calib = None
    if plan.importance in ("activation", "taylor"):
        from sparsa.prune.calib import default_calibration

        log("calibration text: the `corpus` set (built once, then cached) ...")
        calib = default_calibration(dense)
    log(f"pruning {heads:.0%} of heads and {ffn:.0%} of FFN neurons by {plan.importance} importance ...")
    small = prune(dense, plan, data=calib)
    if out:
        small.save(out)
    x = dense.example_inputs(batch=1, seq_len=seq_len)
    log(f"timing (batch 1, seq {seq_len}, {threads} threads, {runs} interleaved runs) ...")
    lat_s, lat_d = measure_latency_pair(lambda: small.model(**x), lambda: dense.model(**x), warmup=5, runs=runs,
                                        threads=threads)
    fid = fidelity(small, dense, EVAL_SENTENCES, dense.tokenizer)
    row = lambda m: {  # noqa: E731
        "params": count_params(m.model), "params_encoder": count_params(m.model, exclude_embeddings=True),
        "macs": count_macs(m.model, x),
    }
    d, s = row(dense), row(small)
    d.update(latency_ms=lat_d["median_ms"], latency_p10_ms=lat_d["p10_ms"], latency_p90_ms=lat_d["p90_ms"], cosine=1.0)
    s.update(latency_ms=lat_s["median_ms"], latency_p10_ms=lat_s["p10_ms"], latency_p90_ms=lat_s["p90_ms"],
             latency_ratio=lat_s["paired_ratio_median"], cosine=fid["cosine_mean"], cosine_min=fid["cosine_min"])
    return {"model": "minilm", "plan": plan.to_dict(), "seq_len": seq_len, "threads": threads, "runs": runs,
            "dense": d, "pruned": s, "out": out,
            "heads_per_layer": small.describe()["heads_per_layer"], "ffn_per_layer": small.describe()["ffn_per_layer"]}


def demo_table(r: dict):
    from rich.table import Table

    d, s = r["dense"], r["pruned"]
    t = Table(title=f"MiniLM, {r['plan']['heads']:.0%} heads + {r['plan']['ffn']:.0%} FFN removed "
                    f"({r['plan']['importance']} importance)")
    for c in ("", "dense", "pruned", "pruned / dense"):
        t.add_column(c, justify="right" if c else "left")
    t.add_row("parameters (all)", f"{d['params'] / 1e6:.2f} M", f"{s['params'] / 1e6:.2f} M", f"{s['params'] / d['params']:.3f}")
    t.add_row("parameters (encoder)", f"{d['params_encoder'] / 1e6:.2f} M", f"{s['params_encoder'] / 1e6:.2f} M",
              f"{s['params_encoder'] / d['params_encoder']:.3f}")
    t.add_row(f"MACs (seq {r['seq_len']})", f"{d['macs'] / 1e9:.3f} G", f"{s['macs'] / 1e9:.3f} G", f"{s['macs'] / d['macs']:.3f}")
    t.add_row(f"latency median ({r['threads']} threads)", f"{d['latency_ms']:.1f} ms", f"{s['latency_ms']:.1f} ms",
              f"{s['latency_ratio']:.3f}")
    t.add_row("embedding fidelity (cosine)", "1.000", f"{s['cosine']:.3f} (min {s['cosine_min']:.3f})", "")
    return t


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Prune the real MiniLM and compare it with the dense model.")
    ap.add_argument("--heads", type=float, default=0.5)
    ap.add_argument("--ffn", type=float, default=0.5)
    ap.add_argument("--importance", default="activation")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="also save the pruned model to this folder")
    a = ap.parse_args(argv)
    from rich.console import Console

    from sparsa.errors import SparsaError

    console = Console()
    try:
        r = run_demo(a.heads, a.ffn, a.importance, a.runs, a.threads, out=a.out,
                     log=lambda m: console.print(f"[dim]{m}[/]"))
    except SparsaError as e:
        console.print(f"[bold red]error:[/] {e.message}" + (f"\n[yellow]hint:[/] {e.hint}" if e.hint else ""))
        raise SystemExit(2)
    console.print(demo_table(r))


if __name__ == "__main__":
    main()
