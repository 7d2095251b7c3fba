"""Recovery of the real MiniLM after structured pruning (heads + FFN), measured as embedding
cosine vs the dense model on the held-out EVAL_SENTENCES (never trained, calibrated or tuned on).

    nice -n 19 python bench/minilm_recovery.py --fractions 0.25 --cpu-budget 1200 --threads 2 \\
        --corpus fortunes --json bench/_work/minilm_rec25.json
    python bench/minilm_recovery.py --table bench/_work/minilm_rec25.json bench/_work/minilm_rec50.json

Per fraction: one-shot pruning (importance: activation on 256 calib sentences), then the
layer-wise least-squares refit of every attention-output and FFN-output projection (closed form,
the first `--refit-samples` train sentences), then knowledge distillation (embedding cosine +
every layer's hidden state) on the train split until `--cpu-budget` seconds of process CPU time
(all threads summed, evaluations excluded) or `--steps` steps, whichever comes first; the cosine
LR schedule follows that budget. The recovery curve (cosine vs steps and CPU seconds) is
evaluated every `--eval-every` steps, on EVAL_SENTENCES and on `--heldout` fortunes test
sentences (the latter is what probes are ranked on). Prints a markdown table and the curve.

CHOICE: `--corpus fortunes` (the BSD fortune files, sparsa.data.fortunes) is the default for
calibration, refit and KD text. Measured 2026-12-06 at 50% heads+FFN, same recipe otherwise:
one-shot 0.6141 (docstring calibration) vs 0.6472 (fortunes), after the 1024-sentence refit
0.7012 (docstrings, BENCHMARKS.md run of 2026-11-25) vs 0.8213 on EVAL_SENTENCES; the everyday-English quotes are far closer to the held-out
sentences than Python docstrings, and that distance, not the KD recipe, was the plateau. After
1200 KD CPU s (lr 1e-4, as before): 0.9481 at 25% and 0.8742 at 50% (docstrings: 0.8784, 0.7425).
`docstrings` stays selectable (and `mixed`, both interleaved, not measured)."""

from __future__ import annotations

import argparse
import json
import os
import time

import torch


def table(results: list[dict]) -> str:
    lines = ["| heads+FFN pruned | corpus | params | one-shot | + lstsq refit (CPU s) | KD steps | KD CPU s (wall s) | "
             "cosine @300 / 600 / 1200 CPU s | refit + KD within 1200 CPU s | final cosine | final held-out |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        at = [_at_cpu(r["curve_detail"], c, r["kd_stop"]) for c in (300, 600, 1200)]
        incl = _at_cpu(r["curve_detail"], 1200 - r["refit_cpu_s"], r["kd_stop"])
        held = r.get("final_heldout")
        lines.append(f"| {100 * r['fraction']:.0f}% | {r['args'].get('corpus', 'docstrings')} | "
                     f"{r['params'] / 1e6:.2f}M / {r['params_dense'] / 1e6:.2f}M | "
                     f"{r['oneshot']:.4f} | {r['refit']:.4f} ({r['refit_cpu_s']:.0f}) | {r['kd_steps']} | {r['kd_cpu_s']:.0f} "
                     f"({r['distill_s']:.0f}) | {' / '.join('-' if a is None else f'{a:.4f}' for a in at)} | "
                     f"{'-' if incl is None else f'{incl:.4f}'} | **{r['final']:.4f}** | "
                     f"{'-' if held is None else f'{held:.4f}'} |")
    lines.append("\nrecovery curve (step: cosine (held-out fortunes cosine) @ KD CPU s; step 0 = after the refit):")
    for r in results:
        lines.append(f"- {100 * r['fraction']:.0f}%: " + ", ".join(
            f"{d['step']}: {d['metric']:.4f}" + (f" ({d['heldout']:.4f})" if d.get("heldout") is not None else "")
            + f" @{d['kd_cpu_s']:.0f}s" for d in r["curve_detail"]))
    return "\n".join(lines)


def _at_cpu(detail: list[dict], cpu_s: float, stop: str):
    """The last evaluated cosine within `cpu_s` seconds of KD CPU time (None: the run stopped
    earlier on its CPU budget, so it says nothing about `cpu_s`)."""
    reached = detail[-1]["kd_cpu_s"] >= cpu_s * 0.99 or stop == "steps"
    pts = [d["metric"] for d in detail if d["kd_cpu_s"] <= cpu_s * 1.01]
    return pts[-1] if reached and pts else None


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5])
    p.add_argument("--importance", default="activation")
    p.add_argument("--refit-samples", type=int, default=1024, help="corpus sentences for the lstsq refit (0: skip)")
    p.add_argument("--ridge", type=float, default=1e-2)
    p.add_argument("--cpu-budget", type=float, default=1200.0, help="KD process CPU seconds (all threads)")
    p.add_argument("--steps", type=int, default=5000, help="KD step cap (the LR schedule ends at the earlier of the two)")
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--hidden-weight", type=float, default=1.0)
    p.add_argument("--train-embeddings", action="store_true", help="also train the (unpruned) embeddings")
    p.add_argument("--dropout", action="store_true", help="keep the student's dropout on during KD")
    p.add_argument("--corpus", choices=("docstrings", "fortunes", "mixed"), default="fortunes",
                   help="KD / refit / calibration text: the docstring corpus, the fortune files, or both")
    p.add_argument("--heldout", type=int, default=256,
                   help="also report cosine on this many held-out fortunes test sentences (ranking probes "
                        "without looking at EVAL_SENTENCES; 0: off)")
    p.add_argument("--refit-cache", default=None,
                   help="folder caching the pruned + refit weights (keyed by fraction, importance, corpus, refit "
                        "samples, ridge, max length): probes of KD recipes skip the refit")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--table", nargs="+", default=None, help="only print the table of these --json files")
    args = p.parse_args()
    from sparsa.metrics.cpu import cpu_line

    print(cpu_line(), flush=True)  # where every figure below was measured
    if args.table:
        print(table([r for f in args.table for r in json.load(open(f))["results"]]))
        return
    torch.set_num_threads(args.threads)

    from sparsa.data import load_dataset
    from sparsa.metrics import count_params
    from sparsa.metrics.quality import embed
    from sparsa.models import load
    from sparsa.prune import PrunePlan, prune
    from sparsa.prune.recover import distill, lstsq_refit

    t_all = time.perf_counter()
    print(f"# threads={args.threads} load={os.getloadavg()[0]:.1f} torch {torch.__version__} {vars(args)}", flush=True)
    dense = load("minilm")
    evalset = load_dataset("sentences").texts
    def texts(split: str) -> list[str]:
        names = {"docstrings": ["corpus"], "fortunes": ["fortunes"], "mixed": ["corpus", "fortunes"]}[args.corpus]
        sets = [load_dataset(n, split).texts for n in names]
        # interleave, so the head (calibration, refit) mixes both sources too
        out = [t for group in zip(*sets) for t in group]
        for s_ in sets:
            out += s_[min(map(len, sets)):]
        return out

    calib = texts("calib")[:256]
    train = texts("train")
    heldout = load_dataset("fortunes", "test").texts[: args.heldout] if args.heldout else []
    tok = dense.tokenizer

    with torch.no_grad():
        ref = embed(dense, evalset, tok)  # the dense embeddings, once (same pooling as sparsa.metrics.fidelity)

        ref_h = embed(dense, heldout, tok) if heldout else None

    def mean_cos(lm, texts: list[str], reference) -> float:
        with torch.no_grad():
            return float(torch.nn.functional.cosine_similarity(embed(lm, texts, tok), reference, dim=-1).mean())

    def cos(lm) -> float:
        return mean_cos(lm, evalset, ref)

    def cos_heldout(lm):
        return mean_cos(lm, heldout, ref_h) if heldout else None

    results = []
    for frac in args.fractions:
        row = {"fraction": frac, "importance": args.importance, "args": vars(args)}
        t0, c0 = time.perf_counter(), time.process_time()
        pruned = prune(dense, PrunePlan(heads=frac, ffn=frac, importance=args.importance), data=calib)
        row["prune_s"], row["prune_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
        row["params"], row["params_dense"] = count_params(pruned.model), count_params(dense.model)
        row["oneshot"] = cos(pruned)
        print(f"[{frac}] one-shot cosine {row['oneshot']:.4f}", flush=True)
        t0, c0 = time.perf_counter(), time.process_time()
        cache = None
        if args.refit_cache and args.refit_samples:
            cache = os.path.join(args.refit_cache, f"minilm-{args.importance}-{frac}-{args.corpus}-"
                                 f"{args.refit_samples}-{args.ridge}-{args.max_length}.safetensors")
        if cache and os.path.isfile(cache):
            from safetensors.torch import load_file, safe_open

            pruned.model.load_state_dict(load_file(cache))
            with safe_open(cache, "pt") as f:
                meta = f.metadata()
            row["refit_s"], row["refit_cpu_s"] = float(meta["refit_s"]), float(meta["refit_cpu_s"])
            row["refit_cached"] = cache
        else:
            if args.refit_samples:
                # refit sentences: the head of the train split (KD below samples the whole train split)
                lstsq_refit(pruned, dense, train[: args.refit_samples], n_samples=args.refit_samples,
                            seq_len=args.max_length, ridge=args.ridge)
            row["refit_s"], row["refit_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
            if cache:
                from safetensors.torch import save_file

                os.makedirs(args.refit_cache, exist_ok=True)
                state = {k: v.contiguous() for k, v in pruned.model.state_dict().items()}
                save_file(state, cache + ".tmp", metadata={"refit_s": str(row["refit_s"]),
                                                           "refit_cpu_s": str(row["refit_cpu_s"])})
                os.replace(cache + ".tmp", cache)
        row["refit"] = cos(pruned)
        row["refit_heldout"] = cos_heldout(pruned)
        print(f"[{frac}] lstsq refit ({args.refit_samples} sent.) cosine {row['refit']:.4f} heldout "
              f"{row['refit_heldout']} ({row['refit_s']:.0f}s wall, {row['refit_cpu_s']:.0f}s CPU"
              f"{', cached' if row.get('refit_cached') else ''})", flush=True)
        held = []

        def cos_logged(lm, _t=time.perf_counter(), _c=time.process_time()) -> float:
            v, h = cos(lm), cos_heldout(lm)
            held.append(h)
            print(f"[{frac}]   cosine {v:.4f} heldout {h if h is None else round(h, 4)} (wall "
                  f"{time.perf_counter() - _t:.0f}s, process CPU {time.process_time() - _c:.0f}s, "
                  f"load {os.getloadavg()[0]:.1f})", flush=True)
            return v

        t0 = time.perf_counter()
        d = distill(pruned, dense, train, steps=args.steps, eval_every=args.eval_every, evaluate=cos_logged, kd="hidden",
                    lr=args.lr, batch_size=args.batch, max_length=args.max_length, hidden_weight=args.hidden_weight,
                    cpu_budget_s=args.cpu_budget, warmup_steps=args.warmup,
                    freeze=() if args.train_embeddings else ("embeddings.",), dropout=args.dropout, progress=False)
        row["distill_s"] = time.perf_counter() - t0
        row["kd_cpu_s"], row["kd_steps"], row["kd_stop"] = d["cpu_s"], d["steps"], d["stop"]
        for pt, h in zip(d["curve_detail"], held):
            pt["heldout"] = h
        row["curve"], row["curve_detail"] = d["curve"], d["curve_detail"]
        row["final_heldout"] = held[-1] if held else None
        row["final"] = d["curve"][-1][1]
        row["load_end"] = os.getloadavg()[0]
        print(f"[{frac}] curve {[(x['step'], round(x['metric'], 4), x['kd_cpu_s']) for x in d['curve_detail']]} "
              f"({row['distill_s']:.0f}s wall, {row['kd_cpu_s']:.0f}s KD CPU, stop: {d['stop']})", flush=True)
        results.append(row)
        if args.json:
            from sparsa.io import atomic_write_json

            atomic_write_json(args.json, {"args": vars(args), "results": results})

    print()
    print(table(results))
    print(f"\ntotal wall {time.perf_counter() - t_all:.0f} s, process CPU {time.process_time():.0f} s, "
          f"load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
