"""Embedding tables as integers in sparsa's INT8 ONNX file: file size and held-out fidelity.

    .venv/bin/python bench/embedding_quant.py [--clip search] [--rounds 3] [--no-time]

MiniLM, sparsa W8 (u8×u8, exact GELU) and W7 (u8×s8, FastGelu), both fused (QAttention), each with
its embedding tables stored float32 / int8 / int4 (per-row scales, `export_onnx(embeddings=...)`),
and W7 + SmoothQuant (the most faithful model of bench/quantization.py --section ort) float / int8,
against ONNX Runtime's `quantize_dynamic` per-channel (QInt8 weights; it also quantizes the
embedding Gathers, per tensor) from the plain export and from ORT's BERT optimizer, built in the
same run. Cosine: mean over the built-in held-out sentences of the mean-pooled embedding against
PyTorch FP32 (batch 1, natural length), as bench/quantization.py --section ort. Latency (optional):
batch 1, seq 128, 2 threads, blocks of back-to-back runs (`sparsa.metrics.measure_latency_blocks`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quantization import _cos, _export_fp32, _export_fp32_optimized, _ort_embed, log, md_table  # noqa: E402

from sparsa.metrics.cpu import cpu_line  # noqa: E402


def build(work: Path, clip: str) -> dict:
    import shutil

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from sparsa.data.text import EVAL_SENTENCES
    from sparsa.metrics.quality import embed
    from sparsa.models import load
    from sparsa.quant import QuantConfig, quantize_
    from sparsa.quant.export import export_info, onnx_session

    torch.set_num_threads(2)
    lm = load("minilm")
    tok = lm.tokenizer
    ref = np.stack([embed(lm, [t], tok)[0].numpy() for t in EVAL_SENTENCES])
    feed = lm.example_inputs(batch=1, seq_len=128)
    models = {}
    fp32, opt = work / "fp32.onnx", work / "fp32_opt.onnx"
    _export_fp32(lm.clone().model, feed, fp32)
    _export_fp32_optimized(lm, feed, opt)
    for src_path, how in ((fp32, ""), (opt, ", BERT optimizer")):
        src, dst = work / "src.onnx", work / f"qd{'_opt' if how else ''}.onnx"
        shutil.copy(src_path, src)
        quantize_dynamic(str(src), str(dst), per_channel=True, weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        src.unlink()
        models[f"ORT quantize_dynamic per-channel{how}"] = (dst, "")
    from sparsa.quant.export import export_onnx

    for bits, gelu in ((8, False), (7, True)):
        q = quantize_(lm.clone(), QuantConfig(bits=bits, scheme="sym", clip=clip, per_channel=True,
                                              activations="dynamic", act_scheme="asym"))
        for emb in ("float", "int8", "int4"):
            label = f"sparsa W{bits} (sym-{clip}, fused, {'FastGelu' if gelu else 'exact GELU'}), embeddings {emb}"
            p = export_onnx(q, work / f"sparsa_w{bits}_{emb}.onnx", seq_len=128, fast_gelu=gelu, embeddings=emb)
            models[label] = (p, emb)
    # the most faithful model of bench/quantization.py --section ort (SmoothQuant α=0.5 on Q/K/V, attention-out
    # folded into V, FFN-in; FFN-out α=0.7; Add+LayerNorm), statistics from the first 32 calibration sentences
    from sparsa.data import load_dataset
    from sparsa.quant import QuantConfig as QC

    stats = load_dataset("corpus", split="calib").texts[:32]
    cfg = QC(bits=7, scheme="sym", clip=clip, per_channel=True, activations="dynamic", act_scheme="asym", smooth=0.5,
             smooth_fold=True, overrides={f"encoder.layer.{i}.output.dense": {"smooth": 0.7}
                                          for i in range(lm.config.num_hidden_layers)})
    qs = quantize_(lm.clone(), cfg, calib=stats, calib_samples=len(stats))
    for emb in ("float", "int8"):
        label = f"sparsa W7 + SmoothQuant α=0.5, FFN-out 0.7 (sym-{clip}, FastGelu, Add+LayerNorm), embeddings {emb}"
        p = export_onnx(qs, work / f"sparsa_w7_smooth_{emb}.onnx", seq_len=128, fast_gelu=True, skip_layernorm=False,
                        embeddings=emb)
        models[label] = (p, emb)
    out = {}
    for label, (p, emb) in models.items():
        c = _cos(_ort_embed(onnx_session(p, threads=2), tok, EVAL_SENTENCES), ref)
        info = export_info(p) if emb else {}
        out[label] = {"path": str(p), "cosine": c, "file_mb": os.path.getsize(p) / 1e6,
                      "tables": info.get("embedding_tables", []), "float_layers": info.get("float_layers", [])}
        log(f"{label}: {out[label]['file_mb']:.1f} MB, cosine {c:.5f}")
    return out


def time_models(built: dict, rounds: int) -> dict:
    from sparsa.metrics import measure_latency_blocks
    from sparsa.models import load
    from sparsa.quant.export import onnx_session

    feed = load("minilm").example_inputs(batch=1, seq_len=128)
    fns = {}
    for k, m in built.items():
        s = onnx_session(m["path"], threads=2, spinning=True)  # (the file's own optimizer hints)
        f = {i.name: feed[i.name].numpy() for i in s.get_inputs()}
        fns[k] = lambda s=s, f=f: s.run(None, f)
    times = measure_latency_blocks(fns, rounds=rounds)
    return {k: float(np.median(v)) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", default="search", help="weight clipping of the sparsa models (max | search)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of timing blocks")
    ap.add_argument("--no-time", action="store_true", help="sizes and cosines only")
    ap.add_argument("--work", default=None, help="folder for the ONNX files (default: a temporary one)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="sparsa-embq-"))
    work.mkdir(parents=True, exist_ok=True)
    built = build(work, args.clip)
    med = {} if args.no_time else time_models(built, args.rounds)
    base = {}  # each sparsa model's float-embedding cosine: the cost of storing the tables as integers
    for k, m in built.items():
        if k.endswith("embeddings float"):
            base[k.rsplit(", embeddings", 1)[0]] = m["cosine"]
    rows = []
    for k, m in built.items():
        b = base.get(k.rsplit(", embeddings", 1)[0])
        rows.append([k, f"{m['file_mb']:.1f} MB", f"{m['cosine']:.5f}",
                     f"{m['cosine'] - b:+.5f}" if b is not None and k.startswith("sparsa") else "-",
                     f"{med[k]:.2f}" if k in med else "-"])
    print(f"\n### MiniLM INT8 file size with integer embedding tables\n\n{cpu_line()}; ONNX Runtime "
          f"{__import__('onnxruntime').__version__}; cosine on the held-out sentences vs PyTorch FP32"
          + ("" if args.no_time else f"; latency batch 1, seq 128, 2 threads, {args.rounds} rounds") + "\n")
    print(md_table(["model", "file", "held-out cosine", "vs float tables", "median ms"], rows))
    floats = {k: m["float_layers"] for k, m in built.items() if m["float_layers"]}
    print(f"\nlayers left float: {floats or 'none'}")


if __name__ == "__main__":
    main()
