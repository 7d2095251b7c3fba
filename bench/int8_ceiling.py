"""How fast can an INT8 transformer run on this CPU? The ceiling under any ONNX Runtime graph.

    .venv/bin/python bench/int8_ceiling.py                     # MiniLM, batch 1, seq 128, 2 threads

Times, in one process and interleaved in blocks (`sparsa.metrics.measure_latency_blocks`):
- every GEMM shape of the model's encoder as ONNX Runtime's integer kernel (DynamicQuantizeMatMul,
  7-bit weight codes stored int8 -> MLAS's u8×s8 path, the one sparsa's W7 export selects), as ORT's
  FP32 MatMul, and as PyTorch FP32 `linear`;
- the attention core (softmax(QKᵀ)V over all heads, ORT's float MultiHeadAttention);
- the whole PyTorch FP32 model.
The sum of a model's integer GEMMs and attention cores is a lower bound of any ORT INT8 graph of
that model (LayerNorm, GELU, residual adds and quantization cost zero in it), so
PyTorch FP32 / that sum is the largest speed-up INT8 on ONNX Runtime can show on this machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _session(nodes, inputs, inits, threads):
    import onnxruntime as ort
    from onnx import TensorProto, helper

    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1")
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {n: rng.standard_normal(sh).astype(np.float32) for n, sh in inputs}
    return lambda: s.run(None, feed)


def gemm_fns(m: int, k: int, n: int, threads: int) -> dict:
    """INT8 (u8×s8, dynamic activations), ORT FP32 and PyTorch FP32 calls of one [m,k]x[k,n] GEMM."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    codes = numpy_helper.from_array(rng.integers(-63, 64, (k, n)).astype(np.int8), "W")
    scale = numpy_helper.from_array(np.full(n, 0.01, np.float32), "s")
    wf = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "W")
    x = torch.randn(m, k)
    w = torch.randn(n, k)

    def torch_linear():
        with torch.inference_mode():
            torch.nn.functional.linear(x, w)

    return {
        "int8": _session([helper.make_node("DynamicQuantizeMatMul", ["A", "W", "s"], ["Y"], domain="com.microsoft")],
                         [("A", [m, k])], [codes, scale], threads),
        "ort_fp32": _session([helper.make_node("MatMul", ["A", "W"], ["Y"])], [("A", [m, k])], [wf], threads),
        "torch_fp32": torch_linear,
    }


def attention_fn(seq: int, hidden: int, heads: int, threads: int):
    from onnx import helper

    node = helper.make_node("MultiHeadAttention", ["Q", "K", "V"], ["Y"], domain="com.microsoft", num_heads=heads)
    return _session([node], [(n, [1, seq, hidden]) for n in "QKV"], [], threads)


def encoder_gemms(cfg, seq: int) -> dict[tuple[int, int, int], int]:
    """{(m, k, n): count} of a BERT-style encoder at batch 1: fused QKV, attention-out, FFN-in, FFN-out."""
    h, f, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    return {(seq, h, 3 * h): layers, (seq, h, h): layers, (seq, h, f): layers, (seq, f, h): layers}


def main():
    from sparsa.metrics import measure_latency_blocks
    from sparsa.models import load

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=6, help="rounds of timing blocks (20 warm-up + 40 timed calls each)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm = load(args.model)
    cfg = lm.config
    feed = lm.example_inputs(batch=1, seq_len=args.seq)

    def model_fp32():
        with torch.inference_mode():
            lm.model(**feed)

    shapes = encoder_gemms(cfg, args.seq)
    fns = {"PyTorch FP32 model": model_fp32,
           "attention core": attention_fn(args.seq, cfg.hidden_size, cfg.num_attention_heads, args.threads)}
    for shape in shapes:
        for kind, f in gemm_fns(*shape, args.threads).items():
            fns[(shape, kind)] = f
    # long blocks: a sub-millisecond GEMM needs more than 3 calls to get its pool threads and caches warm
    times = measure_latency_blocks(fns, rounds=args.rounds, warmup=20, runs=40)
    med = {k: float(np.median(v)) for k, v in times.items()}
    p10 = {k: float(np.percentile(v, 10)) for k, v in times.items()}

    print(f"\n### INT8 ceiling: {args.model}, batch 1, seq {args.seq}, {args.threads} threads "
          f"({args.rounds} rounds of 40-run blocks; medians, GMAC/s in brackets)\n")
    print("| GEMM m×k×n | per model | INT8 u8×s8 ms | ORT FP32 ms | PyTorch FP32 ms | INT8 vs ORT FP32 |")
    print("|---|---|---|---|---|---|")
    kinds = ("int8", "ort_fp32", "torch_fp32")
    for shape, count in shapes.items():
        macs = shape[0] * shape[1] * shape[2]
        cells = [f"{med[(shape, k)]:.3f} ({macs / med[(shape, k)] / 1e6:.0f})" for k in kinds]
        print(f"| {'×'.join(map(str, shape))} | {count} | " + " | ".join(cells)
              + f" | {med[(shape, 'ort_fp32')] / med[(shape, 'int8')]:.2f}× |")
    layers = cfg.num_hidden_layers

    def sums(t):
        g = {k: sum(c * t[(sh, k)] for sh, c in shapes.items()) for k in kinds}
        attn = layers * t["attention core"]
        return g | {"attn": attn, "bound": g["int8"] + attn, "full": t["PyTorch FP32 model"]}

    a, b = sums(med), sums(p10)
    rows = [("INT8 GEMMs", "int8"), ("ORT FP32 GEMMs", "ort_fp32"), ("PyTorch FP32 GEMMs", "torch_fp32"),
            (f"attention cores (float, {layers} layers)", "attn"),
            ("**INT8 lower bound** (INT8 GEMMs + attention; everything else free)", "bound"),
            ("PyTorch FP32, whole model", "full")]
    print("\n| sum over the model | from medians, ms | from p10s, ms |\n|---|---|---|")
    for label, k in rows:
        print(f"| {label} | {a[k]:.2f} | {b[k]:.2f} |")
    print(f"| **largest INT8 speed-up vs PyTorch FP32** | **{a['full'] / a['bound']:.2f}×** | "
          f"**{b['full'] / b['bound']:.2f}×** |")


if __name__ == "__main__":
    main()
