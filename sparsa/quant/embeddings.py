"""Embedding tables stored as integers in an exported ONNX graph, one scale per row.

A text model's word-embedding table is most of what an INT8 file holds once its Linear layers are
integer (MiniLM: 30,522 × 384 floats = 46.9 MB of a 58.5 MB file). Each table an `nn.Embedding`
gathers from is stored as symmetric codes with a float32 scale per row (the row is what a token
reads, so one outlier token costs only its own row's precision), and the graph gathers and
dequantizes only the rows it needs:

    int8: Gather(codes int8 [V, H]) -> Cast(float) -> Mul(Gather(scale [V, 1]))
    int4: Gather(packed uint8 [V, H/2]; low nibble = even column, high = odd, each code + 8)
          -> BitwiseAnd 15 / BitShift 4 -> interleave -> Cast(float) -> Sub 8 -> Mul(scale row)

Only standard ONNX ops (opset 18+), so every runtime and CPU runs it; ORT's contrib
GatherBlockQuantized would need power-of-two blocks (384 is not) and runs only in ONNX Runtime.
The dequantized row is float32(code) · scale, one IEEE multiply: exactly `dequantize_rows`, sparsa's
own per-row dequantization, on every ISA. Rows use max clipping at 8 bits (a token's largest
component kept), the clipping search at 4 bits (`choose_qparams(clip="search")`).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import Tensor, nn

from sparsa.errors import SparsaError
from sparsa.quant.primitives import QParams, choose_qparams, dequantize, quantize

EMBEDDING_STORAGES = ("float", "int8", "int4")
_BITS = {"int8": 8, "int4": 4}
_CLIP = {8: "max", 4: "search"}


def check_storage(storage) -> str:
    if storage not in EMBEDDING_STORAGES:
        raise SparsaError(f"embedding storage {storage!r} is unknown", hint=f"use one of {', '.join(EMBEDDING_STORAGES)}")
    return storage


def quantize_rows(table: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """Symmetric per-row codes (int8 [V, H], within ±(2^(bits-1) - 1)) and float32 scales [V]."""
    qp = choose_qparams(table.detach().float(), bits, "sym", _CLIP[bits], axis=0)
    return quantize(table, qp), qp.scale.float()


def dequantize_rows(codes: Tensor, scale: Tensor) -> Tensor:
    """float32(code) · scale[row]: what the exported graph computes for each gathered row."""
    return dequantize(codes, QParams(scale, None, 8, "sym", 0))


def embedding_tables(module: nn.Module) -> dict[str, nn.Embedding]:
    return {n: m for n, m in module.named_modules() if isinstance(m, nn.Embedding)}


def with_quantized_embeddings(model, storage: str):
    """A copy of `model` (LoadedModel or nn.Module) whose embedding tables hold their per-row
    dequantized values: sparsa's simulation of a file exported with `embeddings=storage`."""
    check_storage(storage)
    out = model.clone() if hasattr(model, "clone") else copy.deepcopy(model)
    if storage == "float":
        return out
    module = out.model if hasattr(out, "adapter") else out
    with torch.no_grad():
        for emb in embedding_tables(module).values():
            codes, scale = quantize_rows(emb.weight, _BITS[storage])
            emb.weight.copy_(dequantize_rows(codes, scale))
    return out


def rewrite_gathers(proto, module: nn.Module, storage: str) -> list[str]:
    """Replace each Gather on one of `module`'s embedding tables by a gather of its integer rows and
    their scales (module docstring); returns the names of the tables rewritten. Tables also read by
    other ops (e.g. a tied output projection) keep their float copy for those ops."""
    from onnx import TensorProto, helper, numpy_helper

    check_storage(storage)
    if storage == "float":
        return []
    bits = _BITS[storage]
    by_bytes = {m.weight.detach().float().numpy().tobytes(): (n, m) for n, m in embedding_tables(module).items()}
    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    nodes, extra, done, stored = [], [], [], {}

    def const(name, arr):
        extra.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    for node in g.node:
        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 0)
        init = inits.get(node.input[0]) if node.op_type == "Gather" and node.domain in ("", "ai.onnx") else None
        hit = by_bytes.get(numpy_helper.to_array(init).tobytes()) if init is not None and axis == 0 else None
        if hit is None:
            nodes.append(node)
            continue
        name, emb = hit
        tag = "emb_" + name.replace(".", "_")
        if name not in stored:  # one integer copy per table, however many Gathers read it
            codes, scale = quantize_rows(emb.weight, bits)
            c = codes.numpy()
            if bits == 4:
                if c.shape[1] % 2:
                    raise SparsaError(f"{name}: 4-bit rows pack two codes per byte and need an even width, not {c.shape[1]}",
                                      hint="export with embeddings='int8'")
                u = (c.astype(np.int16) + 8).astype(np.uint8)
                c = u[:, 0::2] | (u[:, 1::2] << 4)
            stored[name] = (const(f"{tag}_q", np.ascontiguousarray(c)),
                            const(f"{tag}_scale", scale.numpy().reshape(-1, 1).astype(np.float32)))
            done.append(name)
        q, s = stored[name]
        idx, out, k = node.input[1], node.output[0], f"{tag}_{len(nodes)}"
        nodes.append(helper.make_node("Gather", [s, idx], [f"{k}_s"], name=f"{k}_gather_scale"))
        nodes.append(helper.make_node("Gather", [q, idx], [f"{k}_q"], name=f"{k}_gather"))
        if bits == 8:
            nodes.append(helper.make_node("Cast", [f"{k}_q"], [f"{k}_f"], to=TensorProto.FLOAT, name=f"{k}_cast"))
        else:  # unpack: [.., H/2] bytes -> [.., H/2, 2] nibbles -> [.., H] codes + 8
            width = emb.weight.shape[1]
            nodes += [
                helper.make_node("BitwiseAnd", [f"{k}_q", const(f"{k}_mask", np.array(15, np.uint8))], [f"{k}_lo"], name=f"{k}_lo"),
                helper.make_node("BitShift", [f"{k}_q", const(f"{k}_four", np.array(4, np.uint8))], [f"{k}_hi"],
                                 direction="RIGHT", name=f"{k}_hi"),
                helper.make_node("Unsqueeze", [f"{k}_lo", const(f"{k}_last", np.array([-1], np.int64))], [f"{k}_lo1"], name=f"{k}_lo1"),
                helper.make_node("Unsqueeze", [f"{k}_hi", f"{k}_last"], [f"{k}_hi1"], name=f"{k}_hi1"),
                helper.make_node("Concat", [f"{k}_lo1", f"{k}_hi1"], [f"{k}_pairs"], axis=-1, name=f"{k}_pairs"),
                helper.make_node("Shape", [idx], [f"{k}_idx_shape"], name=f"{k}_idx_shape"),
                helper.make_node("Concat", [f"{k}_idx_shape", const(f"{k}_width", np.array([width], np.int64))],
                                 [f"{k}_shape"], axis=0, name=f"{k}_shape"),
                helper.make_node("Reshape", [f"{k}_pairs", f"{k}_shape"], [f"{k}_u"], name=f"{k}_interleave"),
                helper.make_node("Cast", [f"{k}_u"], [f"{k}_uf"], to=TensorProto.FLOAT, name=f"{k}_cast"),
                helper.make_node("Sub", [f"{k}_uf", const(f"{k}_eight", np.array(8.0, np.float32))], [f"{k}_f"],
                                 name=f"{k}_unshift"),  # small integers: exact in float32
            ]
        nodes.append(helper.make_node("Mul", [f"{k}_f", f"{k}_s"], [out], name=f"{k}_dequantize"))
    if not done:
        return []
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in nodes for i in n.input} | {o.name for o in g.output}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep + extra)
    return done
