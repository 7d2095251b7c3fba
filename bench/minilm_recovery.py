"""Recovery of the real MiniLM after structured pruning (heads + FFN), measured as embedding
cosine vs the dense model on the held-out EVAL_SENTENCES (never trained or calibrated on).

    python bench/minilm_recovery.py [--fractions 0.25 0.5] [--steps 300] [--eval-every 50]

Per fraction: one-shot pruning (importance: activation on corpus calib text), then the layer-wise
least-squares refit of every attention-output and FFN-output projection (closed form), then
knowledge distillation (embedding cosine + hidden states) on the docstring corpus, with the
recovery curve (cosine vs steps). Prints a markdown table and the curve.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5])
    p.add_argument("--importance", default="activation")
    p.add_argument("--refit-samples", type=int, default=256)
    p.add_argument("--ridge", type=float, default=1e-2)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from sparsa.data import load_dataset
    from sparsa.metrics import count_params
    from sparsa.metrics.quality import embed
    from sparsa.models import load
    from sparsa.prune import PrunePlan, prune
    from sparsa.prune.recover import distill, lstsq_refit

    t_all = time.perf_counter()
    print(f"# threads={args.threads} load={os.getloadavg()[0]:.1f} torch {torch.__version__}", flush=True)
    dense = load("minilm")
    evalset = load_dataset("sentences").texts
    calib = load_dataset("corpus", "calib").texts[:256]
    train = load_dataset("corpus", "train").texts
    tok = dense.tokenizer

    ref = embed(dense, evalset, tok)  # the dense embeddings, once (same pooling as sparsa.metrics.fidelity)

    def cos(lm) -> float:
        return float(torch.nn.functional.cosine_similarity(embed(lm, evalset, tok), ref, dim=-1).mean())

    results = []
    for frac in args.fractions:
        row = {"fraction": frac, "importance": args.importance}
        t0 = time.perf_counter()
        pruned = prune(dense, PrunePlan(heads=frac, ffn=frac, importance=args.importance), data=calib)
        row["prune_s"] = time.perf_counter() - t0
        row["params"], row["params_dense"] = count_params(pruned.model), count_params(dense.model)
        row["oneshot"] = cos(pruned)
        print(f"[{frac}] one-shot cosine {row['oneshot']:.4f}", flush=True)
        t0 = time.perf_counter()
        rep = lstsq_refit(pruned, dense, train[: args.refit_samples], n_samples=args.refit_samples,
                          seq_len=args.max_length, ridge=args.ridge)
        row["refit_s"] = time.perf_counter() - t0
        row["refit"] = cos(pruned)
        print(f"[{frac}] lstsq refit cosine {row['refit']:.4f} ({row['refit_s']:.0f}s)", flush=True)
        t0 = time.perf_counter()
        d = distill(pruned, dense, train, steps=args.steps, eval_every=args.eval_every, evaluate=cos, kd="hidden",
                    lr=args.lr, batch_size=args.batch, max_length=args.max_length, progress=False)
        row["distill_s"] = time.perf_counter() - t0
        row["distill_cpu_s"] = d["seconds"]
        row["curve"] = d["curve"]
        row["final"] = d["curve"][-1][1]
        print(f"[{frac}] curve {[(s, round(c, 4)) for s, c in d['curve']]} ({row['distill_s']:.0f}s)", flush=True)
        results.append(row)

    print("\n| heads+FFN pruned | params | one-shot | + lstsq refit (s) | + KD steps | final cosine | KD wall s |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {100 * r['fraction']:.0f}% | {r['params'] / 1e6:.2f}M / {r['params_dense'] / 1e6:.2f}M | "
              f"{r['oneshot']:.4f} | {r['refit']:.4f} ({r['refit_s']:.0f}) | {args.steps} | {r['final']:.4f} | "
              f"{r['distill_s']:.0f} |")
    print("\nrecovery curve (cosine vs KD steps; step 0 = after the refit):")
    for r in results:
        print(f"- {100 * r['fraction']:.0f}%: " + ", ".join(f"{s}: {c:.4f}" for s, c in r["curve"]))
    print(f"\ntotal wall {time.perf_counter() - t_all:.0f} s, process CPU {time.process_time():.0f} s, "
          f"load average now {os.getloadavg()[0]:.1f}")
    if args.json:
        from sparsa.io import atomic_write_json

        atomic_write_json(args.json, {"args": vars(args), "results": results})


if __name__ == "__main__":
    main()
