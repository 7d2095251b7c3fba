"""INT8 vision transformers on ONNX Runtime: sparsa's integer export vs ORT's `quantize_dynamic`, same model, same run.

    .venv/bin/python bench/vision_int8.py                                  # the tiny fixtures (trained weights)
    .venv/bin/python bench/vision_int8.py --only vit-b16 --runs 5          # one full-size model (random init)

For each model (the bundled tiny-vit / tiny-swin / tiny-videomae, trained, so accuracy means
something; ViT-B/16 224², Swin-T 224², VideoMAE-B 16×224², the standard HF configs with random
weights), dense and structurally pruned (25% of heads + 25% of FFN neurons per layer, l1 importance,
`sparsa.prune.structured.prune`, no recovery: the INT8 files are compared with the float model they
come from), one process builds:
- ORT FP32: the float ONNX export (opset 17, the float model's graph);
- ORT quantize_dynamic: `onnxruntime.quantization.quantize_dynamic(per_channel=True, QInt8)` on that file;
- sparsa W8 / W7: `quantize_loaded(bits=8|7, activations="dynamic")` then `export_onnx`, exactly what
  `sparsa quantize --bits 8|7 --activations dynamic --onnx` writes. The W8 codes' storage is chosen for the
  CPU (`sparsa.quant.kernels`): int8 on ORT's u8×s8 kernels where the CPU has VNNI (exact there, as fast as
  W7), uint8 on u8×u8 elsewhere (exact on every CPU, slower); W7 is int8 everywhere (u8×s8 cannot saturate
  at 7 bits). Beside them, the W8 codes stored uint8 whatever the CPU (`export_onnx(weight_dtype="uint8")`),
  the storage that runs exactly on every CPU, to show what the choice buys.
and reports, per file: size, ORT latency (batch 1, 2 intra-op threads, spinning; `measure_latency_blocks`:
the models' blocks interleaved over `--rounds` so a slow phase of the shared machine hits all of them),
fidelity vs the float PyTorch model on held-out inputs at batch 1 (logits cosine, top-1 agreement; the
fixtures' test-split accuracy), and the layers with float weights left in the graph, by name.
"""

from __future__ import annotations

import argparse
import gc
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

PRUNE = {"heads": 0.25, "ffn": 0.25}
W8_U8 = "sparsa W8, stored uint8 (u8×u8; exact on every CPU)"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def _full(build):
    """A full-size HF model (random init, seed 0), saved and loaded as sparsa loads any folder."""
    def make(tmp: Path):
        from sparsa.models import load

        torch.manual_seed(0)
        build().eval().save_pretrained(tmp)
        return load(tmp)
    return make


def _fixture(name):
    def make(tmp: Path):
        from sparsa.models import load

        return load(name)
    return make


def models():
    import transformers as tf

    # name: (builder, held-out data, held-out samples, labelled?, timing warmup, timed runs per block)
    return {
        "tiny-vit": (_fixture("tiny-vit"), "digits", None, True, 5, 40),
        "tiny-swin": (_fixture("tiny-swin"), "digits", None, True, 5, 40),
        "tiny-videomae": (_fixture("tiny-videomae"), "clips", None, True, 5, 40),
        "vit-b16": (_full(lambda: tf.ViTForImageClassification(tf.ViTConfig(num_labels=1000))), "digits", 16, False, 1, 5),
        "swin-t": (_full(lambda: tf.SwinForImageClassification(tf.SwinConfig(num_labels=1000))), "digits", 16, False, 2, 10),
        "videomae-b": (_full(lambda: tf.VideoMAEForVideoClassification(tf.VideoMAEConfig(num_labels=400))), "clips", 4,
                       False, 1, 2),
    }


def export_float(lm, path: Path) -> Path:
    from sparsa.quant.export import PositionalWrapper

    feed = lm.example_inputs(batch=1)
    names = list(feed)
    m = lm.clone().model.eval()  # tracing must not touch the reference model
    with torch.no_grad():
        torch.onnx.export(PositionalWrapper(m, names), tuple(feed[n] for n in names), str(path), input_names=names,
                          output_names=["output"], dynamic_axes={n: {0: "batch"} for n in names} | {"output": {0: "batch"}},
                          opset_version=17, dynamo=False)
    return path


def ort_quantize_dynamic(src: Path, dst: Path) -> tuple[Path, str]:
    """quantize_dynamic per-channel on a copy of the float file (it rewrites its input's folder).
    Returns the file and a note when its default op set had to be narrowed to load in ONNX Runtime."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from sparsa.quant.export import onnx_session

    work = dst.with_name(dst.stem + "_src.onnx")
    for ops, note in ((None, ""), (["MatMul", "Gemm", "Attention"], "Conv left float: ORT could not load its ConvInteger")):
        shutil.copy(src, work)
        kw = {"op_types_to_quantize": ops} if ops else {}
        quantize_dynamic(str(work), str(dst), per_channel=True, weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT}, **kw)
        work.unlink()
        try:
            onnx_session(dst, threads=1)
            return dst, note
        except Exception as e:  # an op ORT has no CPU kernel for (the Conv3d as ConvInteger): say so, retry
            log(f"quantize_dynamic file does not load ({str(e)[:200]}); retrying without Conv")
    raise RuntimeError("quantize_dynamic gave no loadable file")


def float_weight_nodes(path: Path) -> list[str]:
    """MatMul / Gemm / Conv nodes of an ONNX file whose weight is still a float initializer (by node name)."""
    import onnx

    g = onnx.load(str(path)).graph
    floats = {i.name for i in g.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) >= 2}
    return [n.name or n.output[0] for n in g.node
            if n.op_type in ("MatMul", "Gemm", "Conv") and len(n.input) > 1 and n.input[1] in floats]


def ort_logits(path: Path, x: torch.Tensor, name: str) -> np.ndarray:
    """Batch 1, one sample at a time: dynamic activation ranges then match batch-1 deployment."""
    from sparsa.quant.export import onnx_session

    s = onnx_session(path, threads=2)
    return np.concatenate([s.run(None, {name: x[i:i + 1].numpy()})[0] for i in range(len(x))])


def fidelity(logits: np.ndarray, ref: np.ndarray, y) -> dict:
    a, b = logits.reshape(len(logits), -1), ref.reshape(len(ref), -1)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    out = {"cosine": float(cos.mean()), "cosine_min": float(cos.min()), "top1_agree": float((a.argmax(1) == b.argmax(1)).mean())}
    if y is not None:
        out["accuracy"] = float((a.argmax(1) == y).mean())
    return out


def build_variant(lm, tag: str, work: Path, x, y, input_name: str) -> dict:
    """All files of one float model (dense or pruned) with their size, fidelity and float layers."""
    from sparsa.metrics.quality import predict_logits
    from sparsa.quant import quantize_loaded
    from sparsa.quant.export import export_info, export_onnx

    ref = predict_logits(lm, x, batch_size=4).detach().numpy()
    files: dict = {}
    t = time.time()
    fp = export_float(lm, work / f"{tag}_fp32.onnx")
    files["ORT FP32"] = {"path": fp, "float_layers": float_weight_nodes(fp)}
    qd, note = ort_quantize_dynamic(fp, work / f"{tag}_qdyn.onnx")
    files["ORT quantize_dynamic per-channel"] = {"path": qd, "float_layers": float_weight_nodes(qd), "note": note}
    log(f"{tag}: float export + quantize_dynamic {time.time() - t:.0f}s")
    for bits in (8, 7):
        t = time.time()
        q, _ = quantize_loaded(lm.clone(), bits=bits, activations="dynamic")
        p = export_onnx(q, work / f"{tag}_sparsa_w{bits}.onnx")
        info = export_info(p)
        label = f"sparsa W{bits}" + (f" (stored {info['weights']} for this CPU)" if bits == 8 else "")
        files[label] = {"path": p, "float_layers": info["float_layers"]}
        if bits == 8:  # the same codes on the storage that is exact on every CPU (u8×u8), for comparison
            p = export_onnx(q, work / f"{tag}_sparsa_w8_u8.onnx", weight_dtype="uint8")
            files[W8_U8] = {"path": p, "float_layers": export_info(p)["float_layers"]}
        del q
        gc.collect()
        log(f"{tag}: sparsa W{bits} quantize + export {time.time() - t:.0f}s")
    for k, f in files.items():
        t = time.time()
        f |= fidelity(ort_logits(f["path"], x, input_name), ref, y)
        f["file_bytes"] = os.path.getsize(f["path"])
        f["path"] = str(f["path"])
        log(f"{tag} {k}: cosine {f['cosine']:.5f} top-1 {f['top1_agree']:.3f} "
            f"{'acc %.4f' % f['accuracy'] if 'accuracy' in f else ''} ({time.time() - t:.0f}s)")
    acc = None if y is None else float((ref.reshape(len(ref), -1).argmax(1) == y).mean())
    return {"files": files, "pytorch_accuracy": acc}


def time_variant(files: dict, feed: dict, rounds: int, warmup: int, runs: int) -> dict:
    from sparsa.metrics import measure_latency_blocks
    from sparsa.quant.export import onnx_session

    fns = {}
    for k, f in files.items():
        s = onnx_session(f["path"], threads=2, spinning=True)
        fns[k] = lambda s=s: s.run(None, feed)
    times = measure_latency_blocks(fns, rounds=rounds, warmup=warmup, runs=runs)
    return {k: {"median_ms": float(np.median(v)), "p10_ms": float(np.percentile(v, 10)),
                "p90_ms": float(np.percentile(v, 90)), "n": len(v)} for k, v in times.items()}


def _short(layers: list[str], n=3) -> str:
    if not layers:
        return "none"
    return ", ".join(layers[:n]) + (f" (+{len(layers) - n} more)" if len(layers) > n else "")


def table(name: str, variant: str, res: dict) -> str:
    fl = res["files"]
    base, qd = fl["ORT FP32"]["median_ms"], fl["ORT quantize_dynamic per-channel"]["median_ms"]
    rows = ["| model | file | ORT median ms (p10–p90) | vs ORT FP32 | vs quantize_dynamic | logits cosine (min) "
            "| top-1 agreement | accuracy | layers with float weights |", "|" + "---|" * 9]
    for k, f in fl.items():
        acc = f"{100 * f['accuracy']:.2f}%" if "accuracy" in f else "-"
        rows.append(f"| {k} | {f['file_bytes'] / 1e6:.2f} MB | {f['median_ms']:.2f} ({f['p10_ms']:.2f}–{f['p90_ms']:.2f}) "
                    f"| {base / f['median_ms']:.2f}× | {qd / f['median_ms']:.2f}× | {f['cosine']:.5f} ({f['cosine_min']:.4f}) "
                    f"| {100 * f['top1_agree']:.1f}% | {acc} | {len(f['float_layers'])}: "
                    + ("all (the float model)" if k == "ORT FP32" else _short(f["float_layers"]))
                    + (f" ({f['note']})" if f.get("note") else "") + " |")
    acc = f", PyTorch FP32 accuracy {100 * res['pytorch_accuracy']:.2f}%" if res.get("pytorch_accuracy") is not None else ""
    return f"\n#### {name}, {variant} (n = {res['n_eval']} held-out inputs{acc}; {res['timing']})\n\n" + "\n".join(rows)


def main():
    from sparsa.metrics.cpu import cpu_line

    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="tiny-vit,tiny-swin,tiny-videomae",
                    help=f"comma-separated model names ({', '.join(models())})")
    ap.add_argument("--variants", default="dense,pruned")
    ap.add_argument("--rounds", type=int, default=3, help="timing rounds (blocks per file)")
    ap.add_argument("--runs", type=int, default=None, help="timed runs per block (default: per model)")
    ap.add_argument("--n-eval", type=int, default=None, help="held-out inputs (default: the test split / per model)")
    ap.add_argument("--work", default=None, help="folder for the ONNX files and results.json (default: temporary)")
    args = ap.parse_args()
    torch.set_num_threads(2)  # the ORT sessions' thread count
    work = Path(args.work or tempfile.mkdtemp(prefix="sparsa-vint8-"))
    work.mkdir(parents=True, exist_ok=True)
    import onnxruntime
    import transformers

    print(f"{cpu_line()}\ntorch {torch.__version__}, onnxruntime {onnxruntime.__version__}, transformers "
          f"{transformers.__version__}; ORT batch 1, 2 intra-op threads; load before {os.getloadavg()[0]:.1f}")
    from sparsa.data import load_dataset
    from sparsa.prune.structured import prune

    allm = models()
    results = {}
    for name in [s for s in args.only.split(",") if s]:
        make, data, n_eval, labelled, warmup, runs = allm[name]
        runs = args.runs or runs
        with tempfile.TemporaryDirectory() as tmp:
            dense = make(Path(tmp))
        ds = load_dataset(data, split="test", model=dense)
        n = args.n_eval or n_eval or len(ds.x)
        x = ds.x[:n]
        y = ds.y[:n].numpy() if labelled else None
        input_name = next(iter(dense.example_inputs(batch=1)))
        feed = {input_name: x[:1].numpy()}
        for variant in args.variants.split(","):
            lm = dense if variant == "dense" else prune(dense, **PRUNE)
            t0 = time.time()
            res = build_variant(lm, f"{name}_{variant}", work, x, y, input_name)
            res["n_eval"] = n
            load0 = os.getloadavg()[0]
            for k, tm in time_variant(res["files"], feed, args.rounds, warmup, runs).items():
                res["files"][k] |= tm
            res["timing"] = (f"{args.rounds} rounds × {runs} runs after {warmup} warm-up per file, "
                             f"load {load0:.1f}→{os.getloadavg()[0]:.1f}")
            res["seconds"] = round(time.time() - t0)
            results[f"{name} {variant}"] = res
            print(table(name, variant + (" (25% heads + 25% FFN, no recovery)" if variant == "pruned" else ""), res),
                  flush=True)
            (work / "results.json").write_text(json.dumps(results, indent=1))
            del lm
            gc.collect()
        del dense
        gc.collect()
    print(f"\nfiles and results.json in {work}")


if __name__ == "__main__":
    main()
