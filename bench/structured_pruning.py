"""Structured pruning of the real MiniLM: sparsa vs Torch-Pruning at 25/50/75% heads + FFN.

For each ratio and tool: encoder parameters, MACs (torch's flop counter with the attention
matmuls, same counter for both tools), MAC ratio, measured latency ratio against the dense
model (interleaved runs in this process, batch 1 by default, seq 128, fixed threads; the median of the
per-pair ratios, each pair timed back to back; the same again with both models under
torch.compile, and with both exported to ONNX Runtime FP32), and embedding fidelity (mean-pooled cosine vs dense on the held-out built-in sentences).

    .venv/bin/python bench/structured_pruning.py [--runs 40] [--threads 2] [--ratios 0.25,0.5,0.75] [--batch 1]

Acceptance: at 50% the latency ratio is within 10% of the MAC ratio (pruning buys real speed).
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path

import torch


def torch_pruning_minilm(dense, ratio: float, example: dict, importance: str = "l1"):
    """Torch-Pruning 1.6 on the HF BertModel: heads and FFN neurons only (TOOLCHAIN.md notes)."""
    import torch_pruning as tp

    model = copy.deepcopy(dense)
    layers = model.encoder.layer
    ignored = [l.attention.output.dense for l in layers] + [l.output.dense for l in layers]
    if getattr(model, "pooler", None) is not None:
        ignored.append(model.pooler.dense)
    num_heads = {}
    for l in layers:
        a = l.attention.self
        for lin in (a.query, a.key, a.value):
            num_heads[lin] = a.num_attention_heads
    imp = tp.importance.GroupMagnitudeImportance(p=1 if importance == "l1" else 2)
    pruner = tp.pruner.MetaPruner(
        model, example, importance=imp, pruning_ratio=ratio, ignored_layers=ignored, num_heads=num_heads,
        prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=ratio, global_pruning=False,
    )
    pruner.step()
    for l in layers:  # Torch-Pruning leaves the head-count attributes to the user
        a = l.attention.self
        a.num_attention_heads = pruner.num_heads[a.query]
        a.all_head_size = a.query.out_features
    return model.eval()


def ort_fp32_ratio(pruned, dense, example: dict, threads: int, runs: int, workdir: Path) -> float:
    """Latency ratio pruned/dense with both models exported to ONNX (FP32) and run by ONNX Runtime:
    the deployment path, where per-module Python dispatch does not hide the saved MACs.

    Timed in alternating blocks (10 rounds of runs/5 calls per model, 0.2 s apart), not call by call:
    ORT's pool threads spin-wait after a call, and with spinning on, call-by-call alternation lets
    one session's spinning threads steal the cores of the other; with spinning off every operator
    pays a thread wake-up, a fixed cost that does not shrink with the model. Ratio of the medians."""
    import statistics

    from sparsa.metrics import measure_latency_blocks
    from sparsa.quant.export import PositionalWrapper, onnx_session

    feeds, calls = {k: v.numpy() for k, v in example.items()}, {}
    for tag, m in (("pruned", pruned), ("dense", dense)):
        path = workdir / f"{tag}.onnx"
        names = list(example)
        with torch.inference_mode():
            torch.onnx.export(PositionalWrapper(m, names), tuple(example[n] for n in names), str(path), input_names=names,
                              output_names=["output"], dynamo=False, opset_version=17)
        sess = onnx_session(path, threads=threads, spinning=True)
        calls[tag] = lambda sess=sess: sess.run(None, feeds)
    times = measure_latency_blocks(calls, rounds=10, warmup=3, runs=max(1, runs // 5), pause=0.2)
    return statistics.median(times["pruned"]) / statistics.median(times["dense"])


def compiled_latency_ratio(pruned, dense, example: dict, args) -> float:
    """Latency ratio pruned/dense with both models under torch.compile (inductor, CPU): the
    Python dispatch of the HF modules, a per-call cost that does not shrink with the model, is
    compiled away, so the ratio shows what the removed MACs buy in a compiled deployment."""
    import torch._dynamo

    from sparsa.metrics import measure_latency_pair

    torch._dynamo.reset()  # one fresh cache per pair: recompiles for every pruned variant would hit dynamo's limit
    torch.set_num_threads(args.threads)
    cp, cd = torch.compile(pruned), torch.compile(dense)
    with torch.inference_mode():
        cp(**example), cd(**example)  # compile outside the timed runs
        lat, _ = measure_latency_pair(lambda: cp(**example), lambda: cd(**example), warmup=5, runs=args.runs,
                                      threads=args.threads)
    return lat["paired_ratio_median"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ratios", default="0.25,0.5,0.75")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1,
                    help="batch size of the timed input (per-call overhead weighs less at larger batches)")
    ap.add_argument("--no-ort", action="store_true", help="skip the ONNX Runtime FP32 latency ratio")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile latency ratio")
    args = ap.parse_args()
    from sparsa.metrics.cpu import cpu_line

    print(cpu_line(), flush=True)  # where every figure below was measured
    ratios = [float(r) for r in args.ratios.split(",")]

    from rich.console import Console
    from rich.table import Table

    from sparsa.data.text import EVAL_SENTENCES
    from sparsa.metrics import count_macs, count_params, fidelity, measure_latency_pair
    from sparsa.models import from_module, load
    from sparsa.prune import PrunePlan, prune

    torch.manual_seed(0)
    dense = load("minilm")
    tok = dense.tokenizer
    x = dense.example_inputs(batch=args.batch, seq_len=args.seq_len)
    macs0 = count_macs(dense.model, x)
    p0 = count_params(dense.model, exclude_embeddings=True)
    try:
        from sparsa.data import load_dataset

        calib = load_dataset("corpus", split="calib", seed=0)
    except Exception as e:  # corpus not built: activation importance falls back to a few texts
        print(f"corpus unavailable ({e}); calibrating on a fixed handful of sentences")
        calib = ["The committee will meet again next week to review the budget.",
                 "Light travels faster than sound through air."] * 8

    rows = []
    for r in ratios:
        variants = {
            "sparsa l1_group": lambda: prune(dense, PrunePlan(heads=r, ffn=r, importance="l1_group")).model,
            "sparsa activation": lambda: prune(dense, PrunePlan(heads=r, ffn=r, importance="activation"), data=calib).model,
            "Torch-Pruning L1": lambda: torch_pruning_minilm(dense.model, r, x, "l1"),
        }
        for name, make in variants.items():
            t0 = time.perf_counter()
            m = make()
            prune_s = time.perf_counter() - t0
            macs = count_macs(m, x)
            lat, lat0 = measure_latency_pair(lambda: m(**x), lambda: dense.model(**x), warmup=5, runs=args.runs,
                                             threads=args.threads)
            fid = fidelity(from_module(m, tokenizer=tok), dense, EVAL_SENTENCES, tok)
            compiled_ratio = float("nan") if args.no_compile else compiled_latency_ratio(m, dense.model, x, args)
            ort_ratio = float("nan")
            if not args.no_ort:
                with tempfile.TemporaryDirectory() as d:
                    ort_ratio = ort_fp32_ratio(m, dense.model, x, args.threads, args.runs, Path(d))
            rows.append({
                "ratio": r, "method": name, "params_enc": count_params(m, exclude_embeddings=True) / p0,
                "macs": macs, "mac_ratio": macs / macs0, "lat_ms": lat["median_ms"], "dense_ms": lat0["median_ms"],
                "lat_ratio": lat["paired_ratio_median"], "best_ratio": lat["best_ratio"], "cpu_ratio": lat["paired_cpu_ratio_median"], "cos": fid["cosine_mean"], "prune_s": prune_s,
                "ort_ratio": ort_ratio, "compiled_ratio": compiled_ratio,
            })
            print(rows[-1], flush=True)

    load_avg = os.getloadavg()
    t = Table(title=f"MiniLM structured pruning (batch {args.batch}, seq {args.seq_len}, {args.threads} threads, "
                    f"{args.runs} interleaved runs, load avg {load_avg[0]:.1f})")
    for c in ("heads+FFN removed", "method", "encoder params", "MACs (G)", "MAC ratio", "latency ms (dense ms)",
              "latency ratio", "best-of-N ratio", "lat/MAC", "CPU-time ratio", "compiled latency ratio", "ORT FP32 latency ratio", "fidelity cos"):
        t.add_column(c)
    for row in rows:
        t.add_row(f"{row['ratio']:.0%}", row["method"], f"{row['params_enc']:.3f}", f"{row['macs'] / 1e9:.3f}",
                  f"{row['mac_ratio']:.3f}", f"{row['lat_ms']:.1f} ({row['dense_ms']:.1f})", f"{row['lat_ratio']:.3f}",
                  f"{row['best_ratio']:.3f}", f"{row['lat_ratio'] / row['mac_ratio']:.2f}", f"{row['cpu_ratio']:.3f}", f"{row['compiled_ratio']:.3f}", f"{row['ort_ratio']:.3f}",
                  f"{row['cos']:.3f}")
    Console(width=170).print(t)
    # the same table as markdown, for BENCHMARKS.md
    print("\n| removed | method | encoder params | GMAC | MAC ratio | latency ms (dense) | latency ratio | best-of-N ratio | lat/MAC | CPU-time ratio | compiled latency ratio | ORT FP32 latency ratio | fidelity cos |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['ratio']:.0%} | {row['method']} | {row['params_enc']:.3f} | {row['macs'] / 1e9:.3f} | "
              f"{row['mac_ratio']:.3f} | {row['lat_ms']:.1f} ({row['dense_ms']:.1f}) | {row['lat_ratio']:.3f} | "
              f"{row['best_ratio']:.3f} | {row['lat_ratio'] / row['mac_ratio']:.2f} | {row['cpu_ratio']:.3f} | {row['compiled_ratio']:.3f} | {row['ort_ratio']:.3f} | {row['cos']:.3f} |")
    print(f"dense: {macs0 / 1e9:.3f} GMAC, {p0} encoder params")
    half = [row for row in rows if row["ratio"] == 0.5 and row["method"].startswith("sparsa")]
    for row in half:
        for what, key in (("PyTorch eager", "lat_ratio"), ("torch.compile", "compiled_ratio"),
                          ("ONNX Runtime FP32", "ort_ratio")):
            if row[key] != row[key]:  # column skipped (nan)
                continue
            ok = abs(row[key] - row["mac_ratio"]) <= 0.1 * row["mac_ratio"]
            print(f"acceptance ({row['method']}, 50%, {what}): latency ratio {row[key]:.3f} vs MAC ratio "
                  f"{row['mac_ratio']:.3f} -> {'PASS' if ok else 'FAIL'} (within 10%)")


if __name__ == "__main__":
    main()
