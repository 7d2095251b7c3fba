"""Would another layout of what sits between the integer GEMMs make a sparsa MiniLM file faster?

    PYTHONPATH=. .venv/bin/python bench/glue_variants.py FILE [--rounds 6]

FILE is a fused sparsa export (QAttention, Sum + LayerNormalization, BiasGelu). Each variant is FILE
rewritten one way, with ONNX Runtime's own contrib ops:
- "bias in the GEMM + Gelu": BiasGelu(x, b) -> Add + Gelu, which ORT folds into DynamicQuantizeMatMul's bias;
- "FastGelu": the same with the tanh approximation (FastGelu);
- "SkipLayerNormalization": the residual sums written as Add (and an older file's hint removed), so ORT's
  fusion takes them into its SkipLayerNormalization, as it does in any session;
- "DynamicQuantizeMatMul + MultiHeadAttention": QAttention split into the Q/K/V GEMM, a Split and
  the float attention core (the bound's own parts; ORT's CPU MultiHeadAttention takes no packed Q/K/V);
- "no smoothing Muls": SmoothQuant's run-time Muls dropped (changes the numbers: a cost probe only).
Timed in one process, interleaved: 2-thread wall time in blocks (`measure_latency_blocks`) and the
calling thread's CPU time with 1 thread (`time.thread_time`: what other processes on a shared machine
do not inflate). Each variant's largest output difference from FILE is printed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _nodes(proto, nodes):
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return proto


def _set_hint(proto, value: str):
    from sparsa.quant.export import _HINT_KEY, _set_meta

    _set_meta(proto, _HINT_KEY, value)
    return proto


def residual_add(proto):
    for n in proto.graph.node:
        if n.op_type == "Sum" and len(n.input) == 2:
            n.op_type = "Add"
    return proto


def gelu_unbiased(proto, op: str):
    from onnx import helper

    out = []
    for n in proto.graph.node:
        if n.op_type != "BiasGelu":
            out.append(n)
            continue
        out.append(helper.make_node("Add", list(n.input[:2]), [n.name + "_biased"], name=n.name + "_bias"))
        out.append(helper.make_node(op, [n.name + "_biased"], list(n.output), name=n.name + "_act", domain="com.microsoft"))
    return _nodes(proto, out)


def qattention_split(proto):
    from onnx import TensorProto, helper, numpy_helper

    g = proto.graph
    producer = {o: n for n in g.node for o in n.output}
    inits = {i.name: i for i in g.initializer}
    out, gone = [], set()
    mask = "sparsa_bench_key_padding_mask"
    for n in g.node:
        if n.op_type != "QAttention":
            out.append(n)
            continue
        q, w, b, _, ws = n.input[:5]
        dql = producer[q]
        gone.add(dql.name)
        if not any(m.output[0] == mask for m in out):
            out.append(helper.make_node("Cast", ["attention_mask"], [mask], to=TensorProto.INT32))
        third = numpy_helper.to_array(inits[w]).shape[1] // 3
        split = n.name + "_split_sizes"
        g.initializer.append(numpy_helper.from_array(np.array([third] * 3, np.int64), split))
        heads = next(a.i for a in n.attribute if a.name == "num_heads")
        t = n.name
        out.append(helper.make_node("DynamicQuantizeMatMul", [dql.input[0], w, ws, "", b], [t + "_qkv"],
                                    domain="com.microsoft"))
        out.append(helper.make_node("Split", [t + "_qkv", split], [t + "_q", t + "_k", t + "_v"], axis=2))
        out.append(helper.make_node("MultiHeadAttention", [t + "_q", t + "_k", t + "_v", "", mask], list(n.output),
                                    domain="com.microsoft", num_heads=heads))
    return _nodes(proto, [n for n in out if n.name not in gone or not n.name])


def no_smoothing(proto):
    alias, out = {}, []
    for n in proto.graph.node:
        if n.op_type == "Mul" and n.name.endswith("_smooth"):
            alias[n.output[0]] = n.input[0]
            continue
        out.append(n)
    for n in out:
        for i, x in enumerate(n.input):
            n.input[i] = alias.get(x, x)
    return _nodes(proto, out)


VARIANTS = {
    "bias in the GEMM + Gelu": lambda p: gelu_unbiased(p, "Gelu"),
    "FastGelu (bias in the GEMM)": lambda p: gelu_unbiased(p, "FastGelu"),
    "SkipLayerNormalization": lambda p: residual_add(_set_hint(p, "")),
    "DynamicQuantizeMatMul + MultiHeadAttention": qattention_split,
    "no smoothing Muls (cost probe)": no_smoothing,
}


def main():
    import onnx
    import onnxruntime as ort

    from sparsa.metrics import measure_latency_blocks
    from sparsa.metrics.cpu import cpu_line
    from sparsa.quant.export import onnx_session

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    ort.set_default_logger_severity(3)  # the probe leaves unused initializers behind: ORT's warnings, not ours
    print(cpu_line(), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="sparsa-glue-"))
    files = {"the file": Path(args.file)}
    for name, rewrite in VARIANTS.items():
        files[name] = tmp / f"{len(files)}.onnx"
        onnx.save(rewrite(onnx.load(args.file)), str(files[name]))
    rng = np.random.default_rng(0)
    feed0 = {"input_ids": rng.integers(1000, 2000, (1, 128)), "attention_mask": np.ones((1, 128), np.int64),
             "token_type_ids": np.zeros((1, 128), np.int64)}
    wall, cpu, diff = {}, {}, {}
    ref = None
    for name, path in files.items():
        for threads, into in ((2, wall), (1, cpu)):
            s = onnx_session(path, threads=threads, spinning=threads > 1)
            f = {i.name: feed0[i.name].astype(np.int64) for i in s.get_inputs()}
            into[name] = lambda s=s, f=f: s.run(None, f)
        y = wall[name]()[0]
        ref = y if ref is None else ref
        diff[name] = float(np.abs(y - ref).max())
    load0 = __import__("os").getloadavg()
    t_wall = measure_latency_blocks(wall, rounds=args.rounds, warmup=20, runs=40)
    t_cpu: dict[str, list[float]] = {k: [] for k in cpu}
    for _ in range(args.rounds):
        for k, f in cpu.items():
            for _ in range(3):
                f()
            for _ in range(10):
                c0 = time.thread_time()
                f()
                t_cpu[k].append((time.thread_time() - c0) * 1e3)
    base_w, base_c = np.median(t_wall["the file"]), np.median(t_cpu["the file"])
    print(f"\nload average before timing {load0[0]:.2f}\n")
    print("| variant | 2 threads, wall ms (median) | vs the file | 1 thread, CPU ms (median) | vs the file | max output diff |")
    print("|---|---|---|---|---|---|")
    for k in files:
        w, c = np.median(t_wall[k]), np.median(t_cpu[k])
        print(f"| {k} | {w:.2f} | {w - base_w:+.2f} | {c:.2f} | {c - base_c:+.2f} | {diff[k]:.2g} |")


if __name__ == "__main__":
    main()
