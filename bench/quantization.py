"""Quantization bench: the seed-001 Table-2 comparison on our models, and real integer speed on ONNX Runtime.

    .venv/bin/python bench/quantization.py                 # all sections
    .venv/bin/python bench/quantization.py --section ort   # only ORT latency x fidelity (acceptance 3)

Sections
- table2: MiniLM (embedding cosine on the built-in held-out sentences) and tiny-swin (digits
  accuracy): FP32 vs asym vs sym-max vs sym-search, W8A8 and W4A8 (weights per channel, activations
  static per tensor, §3.3), with real bytes.
- ort: batch 1, seq 128, 2 threads, one process, interleaved runs: PyTorch FP32, ORT FP32,
  ORT quantize_dynamic per-tensor and per-channel, sparsa INT8 (fused graph, QAttention +
  DynamicQuantizeMatMul on u8×u8 kernels) all-integer and with the two most sensitive layers
  (chosen on calibration sentences) in float. Cosine of each ORT model on the held-out sentences.
- prune: tiny-swin tolerance-prune (1%) + 8-bit search-sym: size as % of FP32 and accuracy loss.
Calibration / selection uses `sparsa.data.load_dataset('corpus', split='calib')` (text) and the
digits calib split (images); the evaluation sentences are never used for tuning.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sparsa.quant import QuantConfig, quant_size, quantize_  # noqa: E402

SEED_TABLE2 = {"fp32": "62.4 MB / 78.34%", "asym": "15.6 MB / 72.22% (-6.12)", "sym-max": "15.6 MB / 75.68% (-2.66)",
               "sym-search": "15.6 MB / 77.42% (-0.92)"}
METHODS = {"asym": dict(scheme="asym", clip="max"), "sym-max": dict(scheme="sym", clip="max"),
           "sym-search": dict(scheme="sym", clip="search")}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def md_table(headers, rows):
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


# --------------------------------------------------------------------------- table 2


def table2_minilm(n_calib=32):
    from sparsa.data import load_dataset
    from sparsa.data.text import EVAL_SENTENCES
    from sparsa.metrics import fidelity
    from sparsa.models import load

    lm = load("minilm")
    calib = load_dataset("corpus", split="calib")
    rows = []
    fp = quant_size(lm.model)["fp32_bytes"]
    rows.append(["MiniLM", "FP32", "-", f"{fp / 1e6:.1f} MB (100%)", "1.0000", SEED_TABLE2["fp32"]])
    for bits in (8, 4):
        for name, kw in METHODS.items():
            t = time.time()
            q = lm.clone()
            quantize_(q, QuantConfig(bits=bits, per_channel=True, activations="static", act_bits=8, **kw),
                      calib=calib, calib_samples=n_calib)
            s = quant_size(q)
            f = fidelity(q, lm, EVAL_SENTENCES, lm.tokenizer)
            log(f"minilm W{bits}A8 {name}: cos {f['cosine_mean']:.5f} ({time.time() - t:.0f}s)")
            rows.append(["MiniLM", f"W{bits}A8 {name}", s["bytes"], f"{s['bytes'] / 1e6:.1f} MB ({100 * s['ratio']:.1f}%)",
                         f"{f['cosine_mean']:.4f}", SEED_TABLE2[name] if bits == 8 else ""])
    return rows


def table2_swin(n_calib=64):
    from sparsa.data import load_dataset
    from sparsa.metrics import accuracy
    from sparsa.models import load

    try:
        lm = load("tiny-swin")
    except Exception as e:  # the fixture is trained by another part of the project
        log(f"tiny-swin unavailable: {e}")
        return [["tiny-swin", "(fixture not built)", "", "", "", ""]]
    test = load_dataset("digits", split="test")
    calib = load_dataset("digits", split="calib")
    acc0 = accuracy(lm, test)
    fp = quant_size(lm.model)["fp32_bytes"]
    rows = [["tiny-swin", "FP32", "-", f"{fp / 1e6:.2f} MB (100%)", f"{100 * acc0:.2f}%", SEED_TABLE2["fp32"]]]
    for bits in (8, 4):
        for name, kw in METHODS.items():
            q = lm.clone()
            quantize_(q, QuantConfig(bits=bits, per_channel=True, activations="static", act_bits=8, **kw),
                      calib=calib, calib_samples=n_calib)
            s = quant_size(q)
            acc = accuracy(q, test)
            log(f"swin W{bits}A8 {name}: acc {acc:.4f}")
            rows.append(["tiny-swin", f"W{bits}A8 {name}", s["bytes"], f"{s['bytes'] / 1e6:.2f} MB ({100 * s['ratio']:.1f}%)",
                         f"{100 * acc:.2f}% ({100 * (acc - acc0):+.2f})", SEED_TABLE2[name] if bits == 8 else ""])
    return rows


# --------------------------------------------------------------------------- ORT


class _Pos(torch.nn.Module):
    def __init__(self, m, names):
        super().__init__()
        self.m, self.names = m, names

    def forward(self, *a):
        return self.m(**dict(zip(self.names, a))).last_hidden_state


def _export_fp32(model, inputs, path):
    names = list(inputs)
    with torch.no_grad():
        torch.onnx.export(_Pos(model, names), tuple(inputs[n] for n in names), str(path), input_names=names,
                          output_names=["output"], dynamic_axes={n: {0: "b", 1: "s"} for n in names} | {"output": {0: "b", 1: "s"}},
                          opset_version=17, dynamo=False)


def _ort_embed(sess, tok, texts):
    names = {i.name for i in sess.get_inputs()}
    out = []
    for t in texts:  # batch 1, natural length: no padding in the pooled mean
        enc = tok([t], truncation=True, max_length=128, return_tensors="np")
        h = sess.run(None, {k: v.astype(np.int64) for k, v in enc.items() if k in names})[0]
        m = enc["attention_mask"][..., None].astype(np.float32)
        out.append(((h * m).sum(1) / m.sum(1))[0])
    return np.stack(out)


def _cos(a, b):
    return float(np.mean((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


def ort_section(runs=40, keep_float=2, work=None, fixed_keep=None, fixed_clip=None):
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from sparsa.data import load_dataset
    from sparsa.data.text import EVAL_SENTENCES
    from sparsa.metrics import fidelity
    from sparsa.models import load
    from sparsa.quant.export import export_onnx, onnx_session
    from sparsa.quant.sensitivity import layer_sensitivity

    torch.set_num_threads(2)
    work = Path(work or tempfile.mkdtemp(prefix="sparsa-qbench-"))
    work.mkdir(parents=True, exist_ok=True)
    lm = load("minilm")
    tok = lm.tokenizer
    calib_texts = load_dataset("corpus", split="calib").texts[:16]

    # reference embeddings: PyTorch FP32
    from sparsa.metrics.quality import embed

    ref = np.stack([embed(lm, [t], tok)[0].numpy() for t in EVAL_SENTENCES])

    # ORT baselines (each quantize_dynamic on its own copy of the source file, TOOLCHAIN.md)
    feed = lm.example_inputs(batch=1, seq_len=128)
    fp32_path = work / "fp32.onnx"
    _export_fp32(lm.clone().model, feed, fp32_path)  # a copy: tracing must not touch the reference model
    models = {"ORT FP32": fp32_path}
    for label, pc in (("ORT quantize_dynamic per-tensor", False), ("ORT quantize_dynamic per-channel", True)):
        src = work / f"src_{int(pc)}.onnx"
        shutil.copy(fp32_path, src)
        dst = work / f"qd_{int(pc)}.onnx"
        quantize_dynamic(str(src), str(dst), per_channel=pc, weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        models[label] = dst

    # sparsa: 8-bit sym weights per channel, dynamic u8 activations (exactly what ORT's integer path computes)
    base = dict(bits=8, scheme="sym", per_channel=True, activations="dynamic", act_scheme="asym")
    best = None
    for clip in ((fixed_clip,) if fixed_clip else ("max", "search")):  # choose the clipping on calibration sentences
        q = lm.clone()
        quantize_(q, QuantConfig(clip=clip, **base))
        c = 0.0 if fixed_clip else fidelity(q, lm, calib_texts, tok, batch_size=1)["cosine_mean"]  # batch 1
        log(f"sparsa int8 clip={clip}: calib cosine {c:.5f}")
        if best is None or c > best[1]:
            best = (clip, c, q)
    clip, _, q_all = best
    p_all = export_onnx(q_all, work / "sparsa_int8.onnx", seq_len=128)
    models[f"sparsa INT8 (sym-{clip} weights, fused)"] = p_all
    ffn = [n for n in [f"encoder.layer.{i}.{k}" for i in range(lm.config.num_hidden_layers)
                       for k in ("intermediate.dense", "output.dense")]]
    sens = [{"layer": k, "gain": "given"} for k in fixed_keep] if fixed_keep else layer_sensitivity(q_all, lm, calib_texts, ffn)
    keep = [d["layer"] for d in sens[:keep_float]]
    log(f"most sensitive (calibration): {sens[:4]}")
    q_mix = lm.clone()
    quantize_(q_mix, QuantConfig(clip=clip, overrides={k: None for k in keep}, **base))
    p_mix = export_onnx(q_mix, work / "sparsa_int8_mixed.onnx", seq_len=128)
    models[f"sparsa INT8 + {len(keep)} layers float ({', '.join(k.replace('encoder.layer.', 'L') for k in keep)})"] = p_mix

    sessions = {k: onnx_session(p, threads=2) for k, p in models.items()}
    cos = {"PyTorch FP32": 1.0}
    for k, s in sessions.items():
        cos[k] = _cos(_ort_embed(s, tok, EVAL_SENTENCES), ref)
        log(f"{k}: cosine {cos[k]:.5f}")

    # latency: interleaved, median of `runs`
    feeds = {k: {i.name: feed[i.name].numpy() for i in s.get_inputs()} for k, s in sessions.items()}

    torch.set_num_threads(2)  # the same thread count as the ORT sessions

    def torch_fp32():
        with torch.no_grad():
            lm.model(**feed)

    fns = {"PyTorch FP32": torch_fp32} | {k: (lambda s=s, f=feeds[k]: s.run(None, f)) for k, s in sessions.items()}
    times = {k: [] for k in fns}
    for f in fns.values():
        for _ in range(3):
            f()
    for _ in range(runs):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append((time.perf_counter() - t) * 1e3)
    med = {k: float(np.median(v)) for k, v in times.items()}
    rows = []
    for k in fns:
        p10, p90 = np.percentile(times[k], [10, 90])
        size = os.path.getsize(models[k]) / 1e6 if k in models else None
        rows.append([k, f"{med[k]:.1f}", f"{p10:.1f}–{p90:.1f}", f"{med['PyTorch FP32'] / med[k]:.2f}×",
                     f"{cos[k]:.4f}", f"{size:.1f} MB" if size else "-"])
    return rows, os.getloadavg(), {"keep_float": keep, "clip": clip, "sensitivity": sens[:4]}


# --------------------------------------------------------------------------- prune + quantize


def prune_section(tolerance=0.01):
    from sparsa.data import load_dataset
    from sparsa.metrics import accuracy
    from sparsa.models import load

    try:
        lm = load("tiny-swin")
    except Exception as e:
        log(f"tiny-swin unavailable: {e}")
        return [["(tiny-swin fixture not built)", "", "", "", ""]], "none"
    test = load_dataset("digits", split="test")
    calib = load_dataset("digits", split="calib")
    acc0 = accuracy(lm, test)
    fp = quant_size(lm.model)["fp32_bytes"]
    how = "sparsa.prune.schedule.tolerance_prune (1%)"
    try:
        from sparsa.prune.schedule import tolerance_prune

        with tempfile.TemporaryDirectory() as d:
            tolerance_prune(lm, tolerance, "digits", d, progress=False)
            pruned = load(Path(d) / "model")
    except ImportError:
        from sparsa.prune import prune as one_shot

        how = "one-shot structured prune (50% heads+FFN)"
        pruned = lm.clone()
        one_shot(pruned, heads=0.5, ffn=0.5)
    acc_p = accuracy(pruned, test)
    q = pruned.clone()
    quantize_(q, QuantConfig(bits=8, scheme="sym", clip="search", activations="static"), calib=calib, calib_samples=64)
    s = quant_size(q)
    acc_q = accuracy(q, test)
    rows = [
        ["FP32", f"{fp / 1e6:.2f} MB", "100%", f"{100 * acc0:.2f}%", "-"],
        ["pruned", f"{quant_size(pruned.model)['fp32_bytes'] / 1e6:.2f} MB",
         f"{100 * quant_size(pruned.model)['fp32_bytes'] / fp:.1f}%", f"{100 * acc_p:.2f}%", f"{100 * (acc0 - acc_p):.2f}"],
        ["pruned + W8A8 sym-search", f"{s['bytes'] / 1e6:.2f} MB", f"{100 * s['bytes'] / fp:.1f}%", f"{100 * acc_q:.2f}%",
         f"{100 * (acc0 - acc_q):.2f}"],
    ]
    return rows, how


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--section", choices=["all", "table2", "ort", "prune"], default="all")
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--work", default=None, help="folder for the ONNX files (default: a temporary one)")
    ap.add_argument("--keep-float", nargs="*", default=None,
                    help="layers kept float in the mixed model (default: the 2 most sensitive on calibration texts)")
    ap.add_argument("--clip", default=None, help="weight clipping for the sparsa model (default: chosen on calibration)")
    args = ap.parse_args()
    if args.section in ("all", "table2"):
        rows = table2_minilm() + table2_swin()
        print("\n### Seed-001 Table 2 on our models (weights per channel, activations static per tensor)\n")
        print(md_table(["model", "method", "bytes", "size (of FP32)", "quality", "seed Swin-T (Table 2)"], rows))
    if args.section in ("all", "ort"):
        rows, load_avg, info = ort_section(runs=args.runs, work=args.work, fixed_keep=args.keep_float,
                                           fixed_clip=args.clip)
        print("\n### MiniLM on ONNX Runtime: batch 1, seq 128, 2 threads (one process, interleaved runs)\n")
        print(md_table(["model", "median ms", "p10–p90 ms", "speed-up vs PyTorch FP32", "cosine vs FP32", "file"], rows))
        print(f"\nsparsa choices (on calibration sentences): {info}\nload average during the run: {load_avg}")
    if args.section in ("all", "prune"):
        rows, how = prune_section()
        print(f"\n### tiny-swin: prune ({how}) + 8-bit search-sym\n")
        print(md_table(["model", "size", "% of FP32", "accuracy (digits test)", "loss (points)"], rows))


if __name__ == "__main__":
    main()
