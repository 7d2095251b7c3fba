"""PENNI + ESCALATE on the CNN fixture (and the video fixture's patch-embedding Conv3d).

    .venv/bin/python bench/penni.py [--epochs 12 --finetune-epochs 6 --lam 1e-3] [--skip-video]

Runs decompose -> retrain (L1, alternating) -> prune (s·std) -> finetune on `tiny-cnn` (digits),
then measures, against the original model IN THE SAME RUN: accuracy, parameters, MACs (PENNI's
count with sparse coefficients, ESCALATE's order, and the shrunk model folded back to dense
convolutions), CPU latency (interleaved rounds, medians; batch 1 and 32), the ESCALATE hybrid
8-bit/ternary model's accuracy and real safetensors size, and the `escalate` preset's simulated
cycles with the achieved coefficient sparsity. Prints markdown tables and writes
bench/_work/penni.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sparsa.decompose import PenniConfig, accuracy, merge_to_dense, set_impl, shrink  # noqa: E402
from sparsa.decompose.cost import layer_macs, total_macs  # noqa: E402
from sparsa.decompose.escalate import hybrid_finetune, hybridize, storage_bytes  # noqa: E402
from sparsa.decompose.flow import load_splits, run_penni  # noqa: E402
from sparsa.decompose.layers import PenniConv  # noqa: E402

GROUP_LAM = 2e-2  # bench defaults of the group variant (sweep in BENCHMARKS.md / docs/penni.md)
CHANNEL_S = 0.5
CHANNEL_FRACTION = 0.5


def interleaved_latency(variants: dict, x: torch.Tensor, rounds: int = 15, per_round: int = 5) -> dict:
    """Median ms per call for each variant, timed in interleaved rounds (fair under a noisy neighbour)."""
    times = {k: [] for k in variants}
    with torch.inference_mode():
        for fn in variants.values():
            for _ in range(3):
                fn(x)
        for _ in range(rounds):
            for k, fn in variants.items():
                t0 = time.perf_counter()
                for _ in range(per_round):
                    fn(x)
                times[k].append((time.perf_counter() - t0) * 1e3 / per_round)
    return {k: statistics.median(v) for k, v in times.items()}


def best_order(model: torch.nn.Module, ex) -> dict:
    """Per decomposed layer, the cheapest of PENNI order / ESCALATE order / folded dense (MACs)."""
    rows = layer_macs(model, ex)
    return {"per_layer": {n: min(("penni", "escalate", "dense"), key=lambda k: r[k]) for n, r in rows.items() if "nnz" in r},
            "macs": sum(min(r["penni"], r["escalate"], r["dense"]) for r in rows.values())}


def sim_escalate(model: torch.nn.Module, original: torch.nn.Module, ex) -> dict:
    """Cycles on the `escalate` preset: original convs as im2col GEMMs vs the decomposed layers in
    PENNI's and ESCALATE's order, with the non-zero coefficients concentrated (ternary, 2-bit)."""
    try:
        from sparsa.hw.arch import load_arch
        from sparsa.hw.sim import simulate
        from sparsa.hw.workload import Op, Workload
    except ImportError as e:
        return {"note": f"simulator not available: {e}"}
    arch = load_arch("escalate")
    shapes = {}

    def rec(name):
        def fn(m, a, out):
            shapes[name] = (tuple(a[0].shape), tuple(out.shape))
        return fn

    def collect(net):
        shapes.clear()
        hs = [m.register_forward_hook(rec(n)) for n, m in net.named_modules()
              if isinstance(m, (PenniConv, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear))]
        with torch.no_grad():
            net(**{k: v[:1] for k, v in ex.items()})
        for h in hs:
            h.remove()
        return dict(shapes)

    def dense_ops(net, tag):
        ops = []
        for n, (xi, yo) in collect(net).items():
            m = net.get_submodule(n)
            if isinstance(m, torch.nn.Linear):
                ops.append(Op(f"{tag}.{n}", "gemm", None, math.prod(xi[:-1]), m.in_features, m.out_features))
            else:
                k = math.prod(m.kernel_size)
                cin = m.in_channels // m.groups
                ops.append(Op(f"{tag}.{n}", "gemm", None, math.prod(yo[2:]), cin * k, m.out_channels // m.groups,
                              count=m.groups))
        return ops

    def penni_ops(net, order):
        ops = []
        for n, (xi, yo) in collect(net).items():
            m = net.get_submodule(n)
            if not isinstance(m, PenniConv):
                ops += [o for o in dense_ops_single(m, n, xi, yo)]
                continue
            hw_in, hw_out = math.prod(xi[2:]), math.prod(yo[2:])
            d, k, ci, co = m.num_basis, m.kernel_volume, m.in_channels, m.out_channels
            nnz = int(m.coefs.ne(0).sum())
            if order == "penni":
                # the basis kernels are shared by every input channel: one [H'W'·C_in, K] x [K, d] GEMM
                ops.append(Op(f"{n}.basis", "gemm", None, hw_out * ci, k, d))
                ops.append(Op(f"{n}.combine", "gemm", None, hw_out, max(1, math.ceil(nnz / co)), co, operand_bits=2))
            else:
                ops.append(Op(f"{n}.combine", "gemm", None, hw_in, max(1, math.ceil(nnz / (co * d))), co * d, operand_bits=2))
                # each output channel convolves its own d maps with the shared basis: a GEMV per row
                ops.append(Op(f"{n}.basis", "gemm", None, hw_out * co, d * k, 1))
        return ops

    def dense_ops_single(m, n, xi, yo):
        if isinstance(m, torch.nn.Linear):
            return [Op(n, "gemm", None, math.prod(xi[:-1]), m.in_features, m.out_features)]
        k = math.prod(m.kernel_size)
        return [Op(n, "gemm", None, math.prod(yo[2:]), m.in_channels // m.groups * k, m.out_channels // m.groups,
                   count=m.groups)]

    out = {}
    base = simulate(Workload("original", dense_ops(original, "orig"), seq_len=1), arch).cycles
    out["original_cycles"] = base
    for order in ("penni", "escalate"):
        c = simulate(Workload(order, penni_ops(model, order), seq_len=1), arch).cycles
        out[f"{order}_cycles"] = c
        out[f"{order}_speedup"] = base / max(1, c)
    merged = copy.deepcopy(model)
    merge_to_dense(merged)
    out["merged_dense_cycles"] = simulate(Workload("merged", dense_ops(merged, "m"), seq_len=1), arch).cycles
    out["merged_dense_speedup"] = base / max(1, out["merged_dense_cycles"])
    return out


def run_cnn(args) -> dict:
    from sparsa.models import load

    lm = load(args.model)
    sets = load_splits(lm, None, 0)
    cfg = PenniConfig(basis=args.basis, retrain_epochs=args.epochs, lam=args.lam, finetune_epochs=args.finetune_epochs,
                      shrink="none", seed=0, s=args.s, fold_bn=args.fold_bn, tolerance=args.tolerance)
    log = (lambda r: print(f"  epoch {r['epoch']} {r.get('phase', '')} loss {r['loss']:.4f} ({r['seconds']:.1f}s)",
                           flush=True)) if args.verbose else None
    work, res = run_penni(lm, cfg, sets, hybrid=False, log=log)
    ex = lm.example_inputs(batch=2)
    orig = lm.model.eval()
    variants_models = {}
    for mode in ("safe", "ref"):
        m = copy.deepcopy(work.model).eval()
        res[f"shrink_{mode}"] = shrink(m, ex, mode=mode)
        variants_models[mode] = m
    rows = {}
    o_macs = total_macs(orig, ex)["dense"]
    rows["original"] = {"accuracy": accuracy(orig, sets["test"]), "params": sum(p.numel() for p in orig.parameters()),
                        "macs": o_macs}
    for mode, m in variants_models.items():
        macs = total_macs(m, ex)
        bo = best_order(m, ex)
        rows[f"penni-{mode}"] = {"accuracy": accuracy(m, sets["test"]), "params": sum(p.numel() for p in m.parameters()),
                                 "macs": macs["penni"], "macs_escalate": macs["escalate"], "macs_dense": macs["dense"],
                                 "macs_best": bo["macs"], "best_order": bo["per_layer"]}
    # the deployable forms for latency: two-stage PENNI order, ESCALATE order, folded dense
    best_mode = "ref" if rows["penni-ref"]["accuracy"] >= rows["original"]["accuracy"] - 0.01 else "safe"
    m = variants_models[best_mode]
    penni_m = copy.deepcopy(m)
    set_impl(penni_m, "penni")
    esc_m = copy.deepcopy(m)
    set_impl(esc_m, "escalate")
    merged = copy.deepcopy(m)
    merge_to_dense(merged)
    hyb = copy.deepcopy(m)
    acc_before_qat = accuracy(hyb, sets["test"])
    hybrid_finetune(hyb, sets["train"], epochs=args.hybrid_epochs, log=log)
    hyb.eval()
    hrec = hybridize(hyb)
    with tempfile.TemporaryDirectory() as d:
        from sparsa.models import from_module

        from_module(hyb).save(d)
        hfile = (Path(d) / "model.safetensors").stat().st_size
        from_module(merged).save(d + "/m")
        mfile = (Path(d) / "m" / "model.safetensors").stat().st_size
    ofile = (Path(lm_path(args.model)) / "model.safetensors").stat().st_size
    rows["hybrid"] = {"accuracy": accuracy(hyb, sets["test"]), "bytes": storage_bytes(hyb), "file_bytes": hfile,
                      "original_file_bytes": ofile, "merged_file_bytes": mfile,
                      "coefficient_sparsity": hrec["coefficient_sparsity"], "hybrid_epochs": args.hybrid_epochs,
                      "float_accuracy_before": acc_before_qat}
    torch.set_num_threads(args.threads)
    for net in (orig, penni_m, esc_m, m, merged, hyb):
        net.eval()
    lat = {}
    for b in (1, 32):
        x = sets["test"].x[:b]
        lat[b] = interleaved_latency({"original": orig, "penni order": penni_m, "escalate order": esc_m,
                                      "decomposed (dense impl)": m, "shrunk, folded dense": merged,
                                      "hybrid 8b/ternary (escalate order)": hyb}, x, rounds=args.rounds)
    return {"config": res["config"], "s": res["s"], "s_search": res.get("s_search"), "shrink_mode_used": best_mode,
            "accuracy_steps": {k: res[k] for k in ("decomposed_accuracy", "retrained_accuracy", "pruned_accuracy")},
            "coefficient_sparsity": res["coefficient_sparsity"], "rows": rows, "latency_ms": lat,
            "shrink": {k: res[k] for k in ("shrink_safe", "shrink_ref")}, "sim": sim_escalate(m, orig, ex),
            "seconds": res["seconds"], "retrain": res["retrain"], "finetune": res["finetune"]}


def run_group(args) -> dict:
    """The structured variant (penalty="group", docs/penni.md): group lasso on per-channel coefficient
    slices + L1 on BatchNorm γ, whole channels pruned (consumer columns held at zero through the
    fine-tuning), shrunk, folded back into narrower dense convolutions. Latency with
    sparsa.metrics.measure_latency_pair (original and compressed alternately, same process)."""
    from sparsa.metrics import measure_latency
    from sparsa.metrics.latency import measure_latency_pair
    from sparsa.models import load

    lm = load(args.model)
    sets = load_splits(lm, None, 0)
    cfg = PenniConfig(basis=args.basis, retrain_epochs=args.epochs, lam=args.group_lam,
                      finetune_epochs=args.finetune_epochs, shrink="safe", seed=0, s=args.group_s, penalty="group",
                      channel_s=args.channel_s, channel_fraction=args.channel_fraction if args.channel_fraction >= 0 else None)
    log = (lambda r: print(f"  [group] epoch {r['epoch']} {r.get('phase', '')} loss {r['loss']:.4f} ({r['seconds']:.1f}s)",
                           flush=True)) if args.verbose else None
    work, res = run_penni(lm, cfg, sets, log=log)
    ex = lm.example_inputs(batch=2)
    orig, m = lm.model.eval(), work.model.eval()
    merged = copy.deepcopy(m)
    merge_to_dense(merged)
    merged.eval()
    penni_m = copy.deepcopy(m)
    set_impl(penni_m, "penni")
    o = total_macs(orig, ex)["dense"]
    macs = total_macs(m, ex)
    bo = best_order(m, ex)
    acc = {"original": accuracy(orig, sets["test"]), "shrunk": accuracy(m, sets["test"]),
           "merged": accuracy(merged, sets["test"])}
    lat = {}
    for b in (1, 32):
        x = sets["test"].x[:b]
        a, d = measure_latency_pair(lambda: orig(x), lambda: merged(x), warmup=5, runs=args.latency_runs,
                                    threads=args.threads)
        p = measure_latency(lambda: penni_m(x), warmup=3, runs=max(5, args.latency_runs // 3), threads=args.threads)
        o2 = measure_latency(lambda: orig(x), warmup=3, runs=max(5, args.latency_runs // 3), threads=args.threads)
        lat[b] = {"original_ms": a["median_ms"], "merged_ms": d["median_ms"],
                  "speedup_paired": a.get("paired_ratio_median", a["median_ms"] / d["median_ms"]),
                  "penni_order_ms": p["median_ms"], "original_ms_2": o2["median_ms"],
                  "penni_order_speedup": o2["median_ms"] / p["median_ms"]}
    widths = {n: [int(v.in_channels), int(v.out_channels)] for n, v in merged.named_modules()
              if isinstance(v, (torch.nn.Conv2d, torch.nn.Conv3d))}
    return {"config": res["config"], "s": res["s"], "channels_pruned": res.get("channels_pruned"),
            "shrink": res.get("shrink"), "widths": widths, "accuracy": acc,
            "accuracy_steps": {k: res[k] for k in ("decomposed_accuracy", "retrained_accuracy", "pruned_accuracy")},
            "coefficient_sparsity": res["coefficient_sparsity"], "original_macs": o,
            "macs": {"penni": macs["penni"], "escalate": macs["escalate"], "dense": macs["dense"], "best": bo["macs"]},
            "params": {"original": sum(q.numel() for q in orig.parameters()),
                       "merged": sum(q.numel() for q in merged.parameters())},
            "latency": lat, "seconds": res["seconds"]}


def report_group(out: dict) -> str:
    g = out["group"]
    a, o, mc = g["accuracy"], g["original_macs"], g["macs"]
    c = g["config"]
    lines = [f"Structured variant, `penalty=\"group\"` (d={c['basis']}, group λ={c['lam']}, {c['retrain_epochs']} retraining "
             f"epochs, coefficient s={g['s']}, channel fraction={c['channel_fraction']} (else channel_s={c['channel_s']}), {c['finetune_epochs']} fine-tuning epochs): "
             f"channels removed per group {g['channels_pruned']}; conv widths after shrinking (in, out) {g['widths']}",
             "", "| model | test acc | Δ acc (pt) | params | MACs | MAC reduction |", "|---|---|---|---|---|---|",
             f"| original | {a['original']:.2%} | - | {g['params']['original']:,} | {o:,} | - |"]
    for label, key in (("PENNI order (sparse C)", "penni"), ("best order per layer", "best"),
                       ("shrunk, folded dense", "dense")):
        acc = a["merged"] if key == "dense" else a["shrunk"]
        params = f"{g['params']['merged']:,}" if key == "dense" else "-"
        lines.append(f"| group, {label} | {acc:.2%} | {100 * (acc - a['original']):+.2f} | {params} | {mc[key]:,} | "
                     f"{1 - mc[key] / o:.1%} |")
    lines += ["", f"CPU latency, group variant (ms, `measure_latency_pair`: original and shrunk-folded-dense "
              f"alternately, {out['group_args']['latency_runs']} pairs, median of per-pair ratios; {out['threads']} thread(s); "
              f"load average {out['loadavg']}):", "",
              "| batch | original | shrunk, folded dense | speedup | PENNI order (separate run) | speedup |", "|---|---|---|---|---|---|"]
    for b, r in sorted(((int(k), v) for k, v in g["latency"].items())):
        lines.append(f"| {b} | {r['original_ms']:.3f} | {r['merged_ms']:.3f} | {r['speedup_paired']:.2f}x | "
                     f"{r['penni_order_ms']:.3f} | {r['penni_order_speedup']:.2f}x |")
    return "\n".join(lines)


def lm_path(name):
    from sparsa.models.store import resolve

    return resolve(name)[0]


def run_video(args) -> dict:
    """The video fixture's patch embedding (Conv3d) as a test bed: decompose it, retrain briefly, prune."""
    from sparsa.models import load

    try:
        lm = load("tiny-videomae")
    except Exception as e:  # fixture not built
        return {"note": f"tiny-videomae not available: {e}"}
    sets = load_splits(lm, None, 0)
    if args.video_n:
        for k in ("train", "calib", "test"):
            sets[k] = sets[k].subset(args.video_n)
    cfg = PenniConfig(basis=args.video_basis, retrain_epochs=args.video_epochs, lam=args.lam,
                      finetune_epochs=args.video_epochs // 2, shrink="safe", seed=0, hybrid_epochs=1)
    work, res = run_penni(lm, cfg, sets, hybrid=True)
    ex = lm.example_inputs(batch=1)
    orig, m = lm.model.eval(), work.model.eval()
    conv = {n: r for n, r in layer_macs(m, ex).items() if "nnz" in r}
    conv_orig = {n: r for n, r in layer_macs(orig, ex).items() if n in conv}
    torch.set_num_threads(args.threads)
    x = sets["test"].x[:4]
    variants = {"original": orig}
    for impl in ("penni", "dense"):  # ESCALATE's order would combine at input resolution: 9x the MACs here
        v = copy.deepcopy(m)
        set_impl(v, impl)
        variants[f"hybrid, {impl} order"] = v
    lat = interleaved_latency(variants, x, rounds=args.rounds)
    return {"decompose": res["decompose"], "coefficient_sparsity": res["coefficient_sparsity"],
            "accuracy": {"original": res["original"]["accuracy"], "penni": res["penni"]["accuracy"],
                         "hybrid": res["hybrid"]["accuracy"]},
            "conv_macs": {"original": sum(r["dense"] for r in conv_orig.values()),
                          "penni": sum(r["penni"] for r in conv.values()),
                          "escalate": sum(r["escalate"] for r in conv.values())},
            "params": {"original": res["original"]["params"], "penni": res["penni"]["params"]},
            "hybrid_bytes": res["hybrid"]["bytes"], "latency_ms_batch4": lat, "n": len(sets["train"]),
            "basis": args.video_basis, "epochs": args.video_epochs,
            "seconds": res["seconds"]}


def report(out: dict) -> str:
    c = out["cnn"]
    r = c["rows"]
    o = r["original"]
    lines = [f"{out['args']['model']} (digits, {o['params']:,} params), d={c['config']['basis']}: retrain {c['config']['retrain_epochs']} epochs (λ={c['config']['lam']}), "
             f"s={c['s']}, finetune {c['config']['finetune_epochs']} epochs; coefficient sparsity "
             f"{c['coefficient_sparsity']['sparsity']:.1%}",
             "", "| model | test acc | Δ acc (pt) | params | MACs | MAC reduction |", "|---|---|---|---|---|---|",
             f"| original | {o['accuracy']:.2%} | - | {o['params']:,} | {o['macs']:,} | - |"]
    for mode in ("safe", "ref"):
        p = r[f"penni-{mode}"]
        for label, key in (("PENNI order (sparse C)", "macs"), ("ESCALATE order", "macs_escalate"),
                           ("folded dense", "macs_dense"), ("best order per layer", "macs_best")):
            lines.append(f"| PENNI, shrink={mode}, {label} | {p['accuracy']:.2%} | {100 * (p['accuracy'] - o['accuracy']):+.2f} | "
                         f"{p['params']:,} | {p[key]:,} | {1 - p[key] / o['macs']:.1%} |")
    h = r["hybrid"]
    lines += ["", f"ESCALATE hybrid (shrink={c['shrink_mode_used']}, {h['hybrid_epochs']} hybrid-aware fine-tuning epochs): "
              f"accuracy {h['accuracy']:.2%} "
              f"({100 * (h['accuracy'] - o['accuracy']):+.2f} pt); safetensors file {h['file_bytes']:,} B vs original "
              f"{h['original_file_bytes']:,} B ({h['file_bytes'] / h['original_file_bytes']:.1%}); folded-dense float "
              f"file {h['merged_file_bytes']:,} B; tensors: " + ", ".join(f"{k} {v:,}" for k, v in h["bytes"].items())]
    lines += ["", f"CPU latency (ms, median of interleaved rounds, {out['threads']} thread(s), load average "
              f"{out['loadavg']}):", "", "| variant | batch 1 | vs original | batch 32 | vs original |", "|---|---|---|---|---|"]
    lat = {int(k): v for k, v in c["latency_ms"].items()}  # JSON keys come back as strings
    l1, l32 = lat[1], lat[32]
    for k in l1:
        lines.append(f"| {k} | {l1[k]:.3f} | {l1['original'] / l1[k]:.2f}x | {l32[k]:.3f} | {l32['original'] / l32[k]:.2f}x |")
    s = c["sim"]
    if "original_cycles" in s:
        lines += ["", f"`escalate` preset (simulated, placeholder sizes): original {s['original_cycles']:,} cycles; "
                  f"PENNI order {s['penni_cycles']:,} ({s['penni_speedup']:.2f}x); ESCALATE order {s['escalate_cycles']:,} "
                  f"({s['escalate_speedup']:.2f}x); shrunk folded dense {s['merged_dense_cycles']:,} "
                  f"({s['merged_dense_speedup']:.2f}x); coefficient sparsity {c['coefficient_sparsity']['sparsity']:.1%}"]
    else:
        lines += ["", f"simulator: {s.get('note')}"]
    v = out.get("video")
    if v and "accuracy" in v:
        a = v["accuracy"]
        lines += ["", f"tiny-videomae patch-embedding Conv3d (d={v['basis']} of 128 taps, {v['epochs']} retraining "
                  f"epochs on {v['n']} training clips): accuracy {a['original']:.2%} -> "
                  f"PENNI {a['penni']:.2%}, hybrid {a['hybrid']:.2%}; conv MACs {v['conv_macs']['original']:,} -> "
                  f"PENNI order {v['conv_macs']['penni']:,}, ESCALATE order {v['conv_macs']['escalate']:,}; coefficient "
                  f"sparsity {v['coefficient_sparsity']['sparsity']:.1%}; latency batch 4: "
                  + ", ".join(f"{k} {t:.2f} ms" for k, t in v["latency_ms_batch4"].items())]
    elif v:
        lines += ["", f"video: {v.get('note')}"]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny-cnn", help="the CNN test bed (built-in name or folder)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--finetune-epochs", type=int, default=5)
    p.add_argument("--lam", type=float, default=5e-3)
    p.add_argument("--basis", type=int, default=3)
    p.add_argument("--s", type=float, default=1.0, help="prune threshold scale (ref: 1.0)")
    p.add_argument("--tolerance", type=float, default=None, help="pick s on the calibration split instead: the accuracy drop it may cost, a fraction (0.01 = one point)")
    p.add_argument("--fold-bn", action="store_true")
    p.add_argument("--hybrid-epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--skip-video", action="store_true")
    p.add_argument("--video-only", action="store_true", help="rerun only the video test bed (CNN figures from the last run)")
    p.add_argument("--video-epochs", type=int, default=2)
    p.add_argument("--video-basis", type=int, default=16, help="d for the 2x8x8 (128-tap) patch-embedding kernels")
    p.add_argument("--video-n", type=int, default=0, help="clips per split (0: all)")
    p.add_argument("--variants", default="l1,group",
                   help="l1: the seed's rule (L1 on coefficients); group: group lasso + channel pruning")
    p.add_argument("--group-s", type=float, default=0.0,
                   help="group variant: coefficient threshold scale (0: coefficients stay dense, channels are pruned)")
    p.add_argument("--group-lam", type=float, default=GROUP_LAM, help="λ of the group penalty")
    p.add_argument("--channel-s", type=float, default=CHANNEL_S, help="group variant: channel threshold scale")
    p.add_argument("--channel-fraction", type=float, default=CHANNEL_FRACTION,
                   help="group variant: fraction of every channel group pruned (lowest scores); <0: use --channel-s")
    p.add_argument("--latency-runs", type=int, default=60, help="pairs timed by measure_latency_pair")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    from sparsa.metrics.cpu import cpu_line

    print(cpu_line(), flush=True)  # where every figure below was measured
    torch.set_num_threads(1)  # training on 2 shared cores: a second thread mostly spins
    out = {"args": vars(args)}
    if args.video_only:  # keep the CNN figures of the last full run
        prev = json.loads((ROOT / "bench" / "_work" / "penni.json").read_text())
        out["cnn"] = prev["cnn"]
    elif "l1" in args.variants.split(","):
        out["cnn"] = run_cnn(args)
    elif (ROOT / "bench" / "_work" / "penni.json").exists():  # keep the seed rule's figures of the last run
        prev = json.loads((ROOT / "bench" / "_work" / "penni.json").read_text())
        out.update({k: prev[k] for k in ("cnn", "video") if k in prev and k not in out})
    if "group" in args.variants.split(","):
        out["group"] = run_group(args)
        out["group_args"] = {"latency_runs": args.latency_runs}
    if not args.skip_video:
        out["video"] = run_video(args)
    out["threads"] = args.threads
    out["loadavg"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    (ROOT / "bench" / "_work").mkdir(exist_ok=True)
    (ROOT / "bench" / "_work" / "penni.json").write_text(json.dumps(out, indent=1, default=str))
    if "cnn" in out:
        print(report(out))
    if "group" in out:
        print()
        print(report_group(out))


if __name__ == "__main__":
    main()
