"""Quantization bench: the seed-001 Table-2 comparison on our models, and real integer speed on ONNX Runtime.

    .venv/bin/python bench/quantization.py                 # all sections
    .venv/bin/python bench/quantization.py --section ort   # only ORT latency x fidelity (acceptance 3)

Sections
- table2: MiniLM (embedding cosine on the built-in held-out sentences) and tiny-swin (digits
  accuracy): FP32 vs asym vs sym-max vs sym-search, W8A8 and W4A8 (weights per channel, activations
  static per tensor, docs/algorithms.md §4), with real bytes.
- ort: batch 1, seq 128, 2 threads, one process: PyTorch FP32, ORT FP32, ORT quantize_dynamic
  per-tensor and per-channel, each from the plain export and from ONNX Runtime's BERT optimizer
  (fused Attention / SkipLayerNorm / BiasGelu, the preparation ORT documents), sparsa W8 (fused graph, QAttention + DynamicQuantizeMatMul on u8×u8
  kernels), sparsa W7 (7-bit codes stored int8: ORT's u8×s8 kernels, FastGelu) all-integer and with
  the two most sensitive layers (chosen on calibration sentences) in float, and sparsa W7 with
  SmoothQuant laid out on BERT (`QuantConfig(smooth=α, smooth_fold=True)`; α and FFN-out's own
  strength chosen on calibration sentences), all-integer; the most faithful of those also with
  SkipLayerNormalization unfused (`export_onnx(skip_layernorm=False)`), the same with only the
  smoothing Muls that pay on calibration data (`trim_smoothing`), sparsa W7 unsmoothed in that
  layout, and the optimized quantize_dynamic per-channel file with the same change. sparsa's files store
  the embedding tables as int8 rows (export_onnx's default; bench/embedding_quant.py compares the
  storages). Cosine of each ORT model
  on the held-out sentences. Latency in blocks of back-to-back runs per model (`sparsa.metrics.measure_latency_blocks`).
  `--stage build` (niced) exports and scores, `--stage time` (under the timing lock) times.
- prune: tiny-swin tolerance-prune (1%, unstructured, KD recovery; `--no-tolerance` skips it) and
  gradual magnitude pruning to `--gmp-targets` with the same KD, + 8-bit search-sym: size in real
  bytes (pruned layers stored as nonzero bitmap + int8 codes; what stays float as float32 or
  float16) as % of FP32, accuracy loss.
Calibration / selection uses `sparsa.data.load_dataset('corpus', split='calib')` (text) and the
digits calib split (images); the evaluation sentences are never used for tuning.
"""

from __future__ import annotations

import argparse
import json
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


def _export_fp32(model, inputs, path):
    from sparsa.quant.export import PositionalWrapper

    names = list(inputs)
    with torch.no_grad():
        torch.onnx.export(PositionalWrapper(model, names), tuple(inputs[n] for n in names), str(path), input_names=names,
                          output_names=["output"], dynamic_axes={n: {0: "b", 1: "s"} for n in names} | {"output": {0: "b", 1: "s"}},
                          opset_version=17, dynamo=False)


def _ort_embed(sess, tok, texts):
    names = {i.name for i in sess.get_inputs()}
    # batch 1, natural length (a dynamic per-tensor activation range must not see padding); a file
    # exported with a fixed length (the pipeline's FP32 export) gets padding, masked out of the mean
    fixed = sess.get_inputs()[0].shape[1]
    pad = {"padding": "max_length"} if isinstance(fixed, int) else {}
    out = []
    for t in texts:
        enc = tok([t], truncation=True, max_length=fixed if pad else 128, return_tensors="np", **pad)
        h = sess.run(None, {k: v.astype(np.int64) for k, v in enc.items() if k in names})[0]
        m = enc["attention_mask"][..., None].astype(np.float32)
        out.append(((h * m).sum(1) / m.sum(1))[0])
    return np.stack(out)


def _cos(a, b):
    return float(np.mean((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


def _export_fp32_optimized(lm, feed, path):
    """FP32 ONNX as ONNX Runtime prepares BERT for quantize_dynamic: eager attention (the pattern its
    fusions recognise), then the transformers optimizer (Attention, SkipLayerNorm, BiasGelu, EmbedLayerNorm)."""
    from sparsa.quant.export import _ort_fuse

    m = lm.clone()
    m.model.set_attn_implementation("eager")
    raw = path.with_name("fp32_eager.onnx")
    _export_fp32(m.model, feed, raw)
    import onnx

    onnx.save(_ort_fuse(raw, m), str(path))  # _ort_fuse returns the fused model, weights loaded
    for f in (raw, raw.with_name("basic.onnx"), raw.with_name("basic.onnx.data")):  # and leaves its steps beside raw
        f.unlink(missing_ok=True)


def _split_layernorm(src, dst):
    """A copy of `src` with SkipLayerNormalization split into Sum + LayerNormalization, as
    `export_onnx` lays out sparsa's file (ORT's fusion matches Add only, so it stays split)."""
    import onnx

    from sparsa.quant.export import split_skip_layernorm

    proto = onnx.load(str(src))
    split_skip_layernorm(proto)
    onnx.save(proto, str(dst))
    return dst


SMOOTH_ALPHAS = (0.3, 0.5, 0.7, 0.85)


def ort_baseline_files(lm, work: Path) -> dict[str, Path]:
    """ONNX Runtime's own files of `lm` in `work`: FP32 from the plain export and, as ONNX Runtime documents
    for BERT, from the transformers optimizer's fused graph, and `quantize_dynamic` per-tensor and
    per-channel of each (each on its own copy of its source file, TOOLCHAIN.md). {label: path}."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    feed = lm.example_inputs(batch=1, seq_len=128)
    fp32_path, opt_path = work / "fp32.onnx", work / "fp32_opt.onnx"
    _export_fp32(lm.clone().model, feed, fp32_path)  # a copy: tracing must not touch the reference model
    _export_fp32_optimized(lm, feed, opt_path)
    models = {"ORT FP32": fp32_path, "ORT FP32, BERT optimizer": opt_path}
    for src_path, how in ((fp32_path, ""), (opt_path, ", BERT optimizer")):
        for pc in (False, True):
            label = f"ORT quantize_dynamic per-{'channel' if pc else 'tensor'}{how}"
            src = work / f"src_{int(pc)}.onnx"
            shutil.copy(src_path, src)
            dst = work / f"qd_{int(pc)}{'_opt' if how else ''}.onnx"
            quantize_dynamic(str(src), str(dst), per_channel=pc, weight_type=QuantType.QInt8,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            src.unlink()
            models[label] = dst
    return models


def ort_build(work, keep_float=2, fixed_keep=None, fixed_clip=None, fast_gelu=True, smooth_alpha=None,
              smooth_ffn_out="auto", smooth_budget=0.001) -> dict:
    """Export every model of the ORT comparison into `work` and measure its cosine (no timing);
    writes and returns work/models.json {label: {"path", "cosine"}} plus the choices made."""
    import json

    from sparsa.data import load_dataset
    from sparsa.data.text import EVAL_SENTENCES
    from sparsa.metrics import fidelity
    from sparsa.metrics.quality import embed
    from sparsa.models import load
    from sparsa.quant.export import export_onnx, onnx_session
    from sparsa.quant.sensitivity import layer_sensitivity, trim_smoothing, trim_summary

    torch.set_num_threads(2)
    work.mkdir(parents=True, exist_ok=True)
    lm = load("minilm")
    tok = lm.tokenizer
    calib_texts = load_dataset("corpus", split="calib").texts[:16]
    ref = np.stack([embed(lm, [t], tok)[0].numpy() for t in EVAL_SENTENCES])  # PyTorch FP32 reference

    models = ort_baseline_files(lm, work)
    # the same graph change the unfused sparsa file makes (see below), for a fair comparison
    unfused = "SkipLayerNormFusion"
    models[f"ORT quantize_dynamic per-channel, BERT optimizer, Add+LayerNorm ({unfused} off)"] = _split_layernorm(
        models["ORT quantize_dynamic per-channel, BERT optimizer"], work / "qd_1_opt_ln.onnx")

    # sparsa: sym weights per channel, dynamic u8 activations (exactly what ORT's integer path computes).
    # W8: u8×u8 kernels (exact for 8-bit codes); W7: codes in [-63, 63] stored int8 -> ORT's faster
    # u8×s8 kernels, which cannot saturate at 7 bits (export_onnx picks the storage).
    def sparsa_cfg(bits, clip, keep=()):
        return QuantConfig(bits=bits, scheme="sym", clip=clip, per_channel=True, activations="dynamic",
                           act_scheme="asym", overrides={k: None for k in keep})

    best = None
    for clip in ((fixed_clip,) if fixed_clip else ("max", "search")):  # choose the clipping on calibration sentences
        q = quantize_(lm.clone(), sparsa_cfg(7, clip))
        c = 0.0 if fixed_clip else fidelity(q, lm, calib_texts, tok, batch_size=1)["cosine_mean"]  # batch 1
        log(f"sparsa W7 clip={clip}: calib cosine {c:.5f}")
        if best is None or c > best[1]:
            best = (clip, c, q)
    clip, _, q7 = best
    ffn = [f"encoder.layer.{i}.{k}" for i in range(lm.config.num_hidden_layers) for k in ("intermediate.dense", "output.dense")]
    sens = [{"layer": k, "gain": "given"} for k in fixed_keep] if fixed_keep else layer_sensitivity(q7, lm, calib_texts, ffn)
    keep = [d["layer"] for d in sens[:keep_float]]
    log(f"most sensitive (calibration): {sens[:4]}")
    gelu = "FastGelu" if fast_gelu else "exact GELU"
    kept = ", ".join(k.replace("encoder.layer.", "L").replace(".output.dense", " FFN-out") for k in keep)
    q8 = quantize_(lm.clone(), sparsa_cfg(8, clip))
    models[f"sparsa W8 (sym-{clip}, fused, u8×u8, exact GELU)"] = export_onnx(q8, work / "sparsa_w8.onnx", seq_len=128)
    models[f"sparsa W7 (sym-{clip}, fused, u8×s8, {gelu})"] = export_onnx(q7, work / "sparsa_w7.onnx", seq_len=128,
                                                                           fast_gelu=fast_gelu)
    q7m = quantize_(lm.clone(), sparsa_cfg(7, clip, keep))
    models[f"sparsa W7 + {len(keep)} layers float ({kept}; u8×s8, {gelu})"] = export_onnx(
        q7m, work / "sparsa_w7_mixed.onnx", seq_len=128, fast_gelu=fast_gelu)

    # SmoothQuant laid out on BERT (sparsa.quant.smooth): Q/K/V share one s (a Mul before QAttention),
    # attention-out folded into V (no op), FFN-in a Mul: strength a; FFN-out (behind GELU) a Mul at its
    # own strength b, or not smoothed. (a, b) chosen on calibration sentences (statistics from
    # calib[:32], cosine on calib[32:96]); two rows: the best without and the best with FFN-out smoothed.
    calib_all = load_dataset("corpus", split="calib").texts
    sm_stats, sm_score = calib_all[:32], calib_all[32:96]
    n_layers = lm.config.num_hidden_layers

    def smooth_cfg(a, b):
        c = sparsa_cfg(7, clip).to_dict() | {"smooth": a, "smooth_fold": True}
        c["overrides"] = {f"encoder.layer.{i}.output.dense": {"smooth": b} for i in range(n_layers)}
        return QuantConfig.from_dict(c)

    a_grid = (smooth_alpha,) if smooth_alpha is not None else SMOOTH_ALPHAS
    b_grid = {"auto": (None,) + SMOOTH_ALPHAS, "off": (None,)}.get(smooth_ffn_out)
    b_grid = b_grid or (None, float(smooth_ffn_out))
    search = []
    for a in a_grid:
        for b in b_grid:
            qs = quantize_(lm.clone(), smooth_cfg(a, b), calib=sm_stats, calib_samples=len(sm_stats))
            c = fidelity(qs, lm, sm_score, tok, batch_size=1)["cosine_mean"]
            log(f"sparsa W7 SmoothQuant a={a} FFN-out b={b}: calib cosine {c:.5f}")
            search.append({"alpha": a, "ffn_out": b, "calib_cosine": c})
    chosen = [max((d for d in search if d["ffn_out"] is None), key=lambda d: d["calib_cosine"])]
    with_fo = [d for d in search if d["ffn_out"] is not None]
    if with_fo and max(d["calib_cosine"] for d in with_fo) > chosen[0]["calib_cosine"]:
        chosen.append(max(with_fo, key=lambda d: d["calib_cosine"]))
    for d in chosen:
        qs = quantize_(lm.clone(), smooth_cfg(d["alpha"], d["ffn_out"]), calib=sm_stats, calib_samples=len(sm_stats))
        where = f"α={d['alpha']:g} on Q/K/V, attention-out (in V), FFN-in" + (
            f"; FFN-out α={d['ffn_out']:g}" if d["ffn_out"] is not None else "")
        fo = "" if d["ffn_out"] is None else f"_fo{d['ffn_out']:g}"
        models[f"sparsa W7 + SmoothQuant ({where}; sym-{clip}, u8×s8, {gelu})"] = export_onnx(
            qs, work / f"sparsa_w7_smooth{d['alpha']:g}{fo}.onnx", seq_len=128, fast_gelu=fast_gelu)
    # the most faithful one again with SkipLayerNormalization unfused (Add + LayerNormalization, faster on ORT 1.32 here)
    models[f"sparsa W7 + SmoothQuant ({where}; sym-{clip}, u8×s8, {gelu}), Add+LayerNorm ({unfused} off)"] = export_onnx(
        qs, work / f"sparsa_w7_smooth{d['alpha']:g}{fo}_ln.onnx", seq_len=128, fast_gelu=fast_gelu, skip_layernorm=False)
    # ... with only the run-time smoothing Muls that pay (sparsa.quant.sensitivity.trim_smoothing, on calibration data)
    trimmed_cfg, trim = trim_smoothing(lm, smooth_cfg(d["alpha"], d["ffn_out"]), sm_stats, sm_score, budget=smooth_budget,
                                       progress=log)
    qt = quantize_(lm.clone(), trimmed_cfg, calib=sm_stats, calib_samples=len(sm_stats))
    n_sites = trim["sites"] - ("pooler.dense" in trim["gain"])  # the pooler is not on the exported output
    n_kept = len(trim["kept"])
    models[f"sparsa W7 + SmoothQuant trimmed ({n_kept} of {n_sites} Muls kept, budget {smooth_budget:g}), "
           f"Add+LayerNorm ({unfused} off)"] = export_onnx(qt, work / "sparsa_w7_smooth_trimmed_ln.onnx", seq_len=128,
                                                            fast_gelu=fast_gelu, skip_layernorm=False)
    # and unsmoothed, laid out the same way (the same ops as quantize_dynamic's fused file, with FastGelu)
    models[f"sparsa W7 (sym-{clip}, u8×s8, {gelu}), Add+LayerNorm ({unfused} off)"] = export_onnx(
        q7, work / "sparsa_w7_ln.onnx", seq_len=128, fast_gelu=fast_gelu, skip_layernorm=False)

    out = {"models": {}, "clip": clip, "keep_float": keep, "sensitivity": sens[:4], "smooth": chosen, "smooth_search": search,
           "smooth_trim": trim_summary(trim)}
    for k, p in models.items():
        c = _cos(_ort_embed(onnx_session(p, threads=2), tok, EVAL_SENTENCES), ref)
        log(f"{k}: cosine {c:.5f}")
        out["models"][k] = {"path": str(p), "cosine": c, "kernel": _kernel(p) if k.startswith("sparsa") else "",
                            "file_mb": os.path.getsize(p) / 1e6}
    (work / "models.json").write_text(json.dumps(out, indent=1))
    return out


def ort_time(work, rounds=4, only=None) -> tuple[list, dict]:
    """Time the models of work/models.json against PyTorch FP32 in one process (see sparsa.metrics.measure_latency_blocks).
    only: time just the models whose label contains one of these strings (close contenders, more rounds)."""
    import json

    from sparsa.metrics import measure_latency_blocks
    from sparsa.models import load
    from sparsa.quant.export import onnx_session

    built = json.loads((work / "models.json").read_text())
    torch.set_num_threads(2)  # the same thread count as the ORT sessions
    lm = load("minilm")  # default attention implementation (SDPA)
    feed = lm.example_inputs(batch=1, seq_len=128)

    def torch_fp32():
        with torch.inference_mode():
            lm.model(**feed)

    fns = {"PyTorch FP32": torch_fp32}
    for k, m in built["models"].items():
        if only and not any(o in k for o in only):
            continue
        s = onnx_session(m["path"], threads=2, spinning=True, disabled_optimizers=m.get("disabled_optimizers"))
        f = {i.name: feed[i.name].numpy() for i in s.get_inputs()}
        fns[k] = lambda s=s, f=f: s.run(None, f)
    load_before = os.getloadavg()
    times = measure_latency_blocks(fns, rounds=rounds)
    med = {k: float(np.median(v)) for k, v in times.items()}
    rows = []
    for k in fns:
        m = built["models"].get(k, {"cosine": 1.0})
        p10, p90 = np.percentile(times[k], [10, 90])
        rows.append([k, f"{med[k]:.1f}", f"{p10:.1f}–{p90:.1f}", f"{med['PyTorch FP32'] / med[k]:.2f}×",
                     f"{m['cosine']:.4f}", f"{m['file_mb']:.1f} MB" if "file_mb" in m else "-"])
    info = {k: built.get(k) for k in ("clip", "keep_float", "smooth")} | {
        "pytorch_attention": lm.model.config._attn_implementation, "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()]}
    return rows, info


def _kernel(path) -> str:
    """Which ORT integer kernel the exported weights select: u8×s8 (int8 weights) or u8×u8."""
    import onnx
    from onnx import numpy_helper

    w = [numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer if i.name.endswith("_wq")]
    return "u8×s8" if w and all(a.dtype == np.int8 for a in w) else "u8×u8"


# --------------------------------------------------------------------------- prune + quantize


def gradual_magnitude_prune(lm, target: float, steps=(0.5, 0.75, 0.9, 1.0), epochs=2.0, lr=1e-3):
    """Per-layer magnitude masks on the attention/MLP Linears (the tolerance schedule's slots) raised to
    `target` in `steps`, each followed by KD fine-tuning from the dense model (sparsa.prune.finetune),
    then 3 epochs at lr/3. A fixed target, no accuracy checks: the reference point for the schedule."""
    from sparsa.data import load_dataset
    from sparsa.prune.finetune import finetune

    train = load_dataset("digits", split="train")
    out = lm.clone()
    slots = [f"{p}.weight" for g in lm.adapter.head_groups() for p in (g.q, g.k, g.v, g.o)]
    slots += [f"{p}.weight" for g in lm.adapter.ffn_groups() for p in (g.fc1, g.fc2)]
    masks = {}
    for i, f in enumerate(steps):
        for k in slots:
            w = out.model.get_parameter(k)
            n_prune = int(round(target * f * w.numel()))
            m = torch.ones(w.numel())
            m[torch.sort(w.detach().abs().flatten(), stable=True).indices[:n_prune]] = 0.0
            masks[k] = m.view_as(w)
            with torch.no_grad():
                w.mul_(masks[k])
        finetune(out, train, teacher=lm, epochs=epochs, lr=lr, kd="logits", masks=masks, progress=False, seed=i)
    finetune(out, train, teacher=lm, epochs=3.0, lr=lr / 3, kd="logits", masks=masks, progress=False, seed=99)
    return out


def prune_section(tolerance=0.01, budget_s=900.0, work=None, accept="point", gmp_targets=(0.85,), tolerance_run=True):
    """tiny-swin: sparsa.prune.schedule.tolerance_prune (unstructured magnitude, seed 001's round-robin
    schedule, tolerance on the digits calib split) with KD recovery, and gradual magnitude pruning to
    fixed targets with the same KD, then W8A8 sym-search; sizes are real bytes, pruned layers stored as
    a nonzero bitmap + nonzero int8 codes (`QuantLinear.weight_format`), what stays float in float32
    or float16 (`half_float_storage_`)."""
    from sparsa.data import load_dataset
    from sparsa.metrics import accuracy
    from sparsa.models import load
    from sparsa.quant import half_float_storage_, quant_layers, save_quantized

    torch.set_num_threads(2)
    try:
        lm = load("tiny-swin")
    except Exception as e:
        log(f"tiny-swin unavailable: {e}")
        return [["(tiny-swin fixture not built)", "", "", "", "", ""]], "none", {}
    test = load_dataset("digits", split="test")
    calib = load_dataset("digits", split="calib")
    acc0, cacc0 = accuracy(lm, test), accuracy(lm, calib)
    fp = quant_size(lm.model)["fp32_bytes"]
    t0 = time.time()

    def pts(a, c, ref=(acc0, cacc0)):
        return f"{100 * (ref[0] - a):.2f} / {100 * (ref[1] - c):.2f}"

    def nonzero(m):
        lin = [x for x in m.model.modules() if isinstance(x, torch.nn.Linear)]
        return sum(int(torch.count_nonzero(x.weight)) for x in lin) / sum(x.weight.numel() for x in lin)

    def quant_rows(model, label, nz):
        """W8A8 sym-search rows of `model` (float32, then float16 storage of what stays float)."""
        q = model.clone()
        quantize_(q, QuantConfig(bits=8, scheme="sym", clip="search", activations="static"), calib=calib, calib_samples=64)
        out = []
        for store in ("float32", "float16"):
            if store == "float16":
                half_float_storage_(q)
            s = quant_size(q)
            out.append([f"{label} + W8A8 sym-search, float {store}", f"{s['bytes'] / 1e3:.1f} kB",
                        f"**{100 * s['bytes'] / fp:.1f}%**", f"{100 * accuracy(q, test):.2f}%",
                        pts(accuracy(q, test), accuracy(q, calib)), f"{100 * nz:.1f}%"])
        return out, q

    rows = [["FP32", f"{fp / 1e3:.1f} kB", "100%", f"{100 * acc0:.2f}%", "-", "100%"]]
    dense_rows, _ = quant_rows(lm, "dense", 1.0)
    rows += dense_rows
    info: dict = {}
    if tolerance_run:
        from sparsa.prune.schedule import tolerance_prune

        # CHOICE: recovery is KD on logits at lr 1e-3 (1 epoch per round), not the seed's plain fine-tuning at
        # 1e-5: with 1e-5 the schedule stopped at 65% sparsity with 3.3 points lost on test (BENCHMARKS.md,
        # tolerance sweep); KD at 1e-3 holds accuracy at 85% sparsity (bench/quantization.py docs).
        # accept="point" (the seed's rule: measured drop on the check split <= tolerance); the schedule's default
        # 95% upper bound rejects any round where one of the 180 check images flips and stalled below 50%
        # sparsity within the budget
        opts = dict(granularity="unstructured", recovery_lr=1e-3, kd="logits", round_recovery_epochs=1.0,
                    delta0=0.25, delta_max=0.35, s_max=0.95, budget_s=budget_s, seed=0, accept=accept)
        out = Path(work or tempfile.mkdtemp(prefix="sparsa-qprune-")) / f"swin-tolerance-{accept}"
        done = out / "result.json"  # a finished run in --work is reused (tolerance_prune refuses to redo it)
        res = json.loads(done.read_text()) if done.is_file() else tolerance_prune(lm, tolerance, "digits", out,
                                                                                  progress=False, **opts)
        log(f"tolerance_prune: {res['stop_reason']} after {time.time() - t0:.0f}s, compression {res['compression']:.3f}")
        pruned = load(out)  # the run's folder is the pruned model
        nz = nonzero(pruned)
        rows.append([f"tolerance_prune {100 * tolerance:g}%, FP32", f"{fp / 1e3:.1f} kB", "100%",
                     f"{100 * accuracy(pruned, test):.2f}%", pts(accuracy(pruned, test), accuracy(pruned, calib)),
                     f"{100 * nz:.1f}%"])
        qrows, q = quant_rows(pruned, f"tolerance_prune {100 * tolerance:g}%", nz)
        rows += qrows
        with tempfile.TemporaryDirectory() as d:
            save_quantized(q, d, source="tiny-swin")
            info["quant_safetensors_bytes_float16"] = (Path(d) / "quant.safetensors").stat().st_size
        formats: dict = {}
        for m in quant_layers(q).values():
            formats[m.weight_format()] = formats.get(m.weight_format(), 0) + 1
        info |= {"schedule": res["stop_reason"], "rounds": res["rounds"], "trials": res["trials"],
                 "weight_formats": formats, "options": opts}
    for target in gmp_targets:  # the same storage after gradual magnitude pruning to a fixed target, same KD
        t1 = time.time()
        g = gradual_magnitude_prune(lm, target)
        nz = nonzero(g)
        log(f"gradual magnitude {target}: {time.time() - t1:.0f}s")
        rows.append([f"magnitude {100 * target:g}% (gradual + KD), FP32", f"{fp / 1e3:.1f} kB", "100%",
                     f"{100 * accuracy(g, test):.2f}%", pts(accuracy(g, test), accuracy(g, calib)), f"{100 * nz:.1f}%"])
        rows += quant_rows(g, f"magnitude {100 * target:g}%", nz)[0]
    info["section_s"] = round(time.time() - t0)
    how = (f"sparsa.prune.schedule.tolerance_prune, tolerance {100 * tolerance:g}%, and " if tolerance_run else "") + \
        f"gradual magnitude pruning to {', '.join(f'{100 * t:g}%' for t in gmp_targets)}"
    return rows, how, info


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--section", choices=["all", "table2", "ort", "prune"], default="all")
    ap.add_argument("--rounds", type=int, default=4, help="ort: rounds of timing blocks (15 runs each)")
    ap.add_argument("--stage", choices=["all", "build", "time"], default="all",
                    help="ort: build (export + cosine, no timing; run it niced) / time (the models built in --work; "
                         "run it under the timing lock) / all")
    ap.add_argument("--exact-gelu", action="store_true", help="ort: keep ORT's exact BiasGelu (default: FastGelu)")
    ap.add_argument("--models", nargs="*", choices=["minilm", "tiny-swin"], default=["minilm", "tiny-swin"],
                    help="table2: which models to run")
    ap.add_argument("--work", default=None, help="folder for the ONNX files (default: a temporary one)")
    ap.add_argument("--keep-float", nargs="*", default=None,
                    help="layers kept float in the mixed model (default: the 2 most sensitive on calibration texts)")
    ap.add_argument("--prune-budget", type=float, default=1800.0, help="prune: tolerance_prune wall-clock budget (s)")
    ap.add_argument("--gmp-targets", type=float, nargs="*", default=[0.85, 0.9],
                    help="prune: fixed sparsities for gradual magnitude pruning + KD (fraction of attention/MLP weights)")
    ap.add_argument("--no-tolerance", action="store_true", help="prune: skip the tolerance_prune run (gradual rows only)")
    ap.add_argument("--clip", default=None, help="weight clipping for the sparsa model (default: chosen on calibration)")
    ap.add_argument("--smooth-alpha", type=float, default=None,
                    help=f"ort: SmoothQuant strength of the smoothed W7 model (default: best of {SMOOTH_ALPHAS} on calibration)")
    ap.add_argument("--smooth-ffn-out", default="auto",
                    help="ort: FFN-out smoothing strength (a run-time Mul behind GELU), 'off', or 'auto' "
                         f"(best of off and {SMOOTH_ALPHAS} on calibration)")
    ap.add_argument("--only", nargs="*", default=None,
                    help="ort --stage time: only the models whose label contains one of these strings")
    ap.add_argument("--smooth-budget", type=float, default=0.001,
                    help="ort: calibration-cosine budget for dropping smoothing Muls in the trimmed model")
    args = ap.parse_args()
    if args.section in ("all", "table2"):
        rows = (table2_minilm() if "minilm" in args.models else []) + (table2_swin() if "tiny-swin" in args.models else [])
        print("\n### Seed-001 Table 2 on our models (weights per channel, activations static per tensor)\n")
        print(md_table(["model", "method", "bytes", "size (of FP32)", "quality", "seed Swin-T (Table 2)"], rows))
    if args.section in ("all", "ort"):
        work = Path(args.work or tempfile.mkdtemp(prefix="sparsa-qbench-"))
        if args.stage in ("all", "build"):
            ort_build(work, fixed_keep=args.keep_float, fixed_clip=args.clip, fast_gelu=not args.exact_gelu,
                      smooth_alpha=args.smooth_alpha, smooth_ffn_out=args.smooth_ffn_out, smooth_budget=args.smooth_budget)
        if args.stage in ("all", "time"):
            rows, info = ort_time(work, rounds=args.rounds, only=args.only)
            from sparsa.metrics.cpu import cpu_line

            print("\n### MiniLM on ONNX Runtime: batch 1, seq 128, 2 threads (blocks of 15 runs per model, "
                  f"{args.rounds} rounds, ORT threads spinning)\n\n{cpu_line()}\n")
            print(md_table(["model", "median ms", "p10–p90 ms", "speed-up vs PyTorch FP32", "cosine vs FP32", "file"],
                           rows))
            print(f"\n{info}")
    if args.section in ("all", "prune"):
        rows, how, info = prune_section(budget_s=args.prune_budget, work=args.work, gmp_targets=args.gmp_targets,
                                        tolerance_run=not args.no_tolerance)
        print(f"\n### tiny-swin: prune ({how}) + 8-bit search-sym\n")
        print(md_table(["model", "size (real bytes)", "% of FP32", "accuracy (digits test)",
                        "loss, points (test / check split)", "nonzero Linear weights"], rows))
        print(f"\n{info}")


if __name__ == "__main__":
    main()
