"""torch's TorchScript ONNX exporter, with the ops it lacks that HF vision models use.

`torch.nn.functional.interpolate(..., antialias=True)` (Dinov2-with-registers and SigLIP-2 position
tables, SAM-2) traces to `aten::_upsample_{bicubic,bilinear}2d_aa`, which the exporter has no symbolic
for. ONNX Resize computes the same thing from opset 18 (`antialias=1`; PyTorch's antialiased cubic
uses a = -0.5 and renormalises over the in-image taps, i.e. `exclude_outside=1`; checked against ORT
to 2e-6 for up-, down- and same-size resizes). The export runs at opset 17, so the symbolic writes the
Resize without `antialias` but with `exclude_outside=1`, which torch's own resize symbolics never set,
and `set_antialias` adds `antialias=1` to those nodes once the graph is at opset 18 or later.

An op the exporter still cannot write is a `SparsaError` naming it, not an internal error.
"""

from __future__ import annotations

from sparsa.errors import SparsaError

EXPORT_OPSET = 17  # what the exporter writes; sparsa.quant.export upgrades the graph afterwards
_AA_OPS = {"aten::_upsample_bicubic2d_aa": "cubic", "aten::_upsample_bilinear2d_aa": "linear"}
_registered = False


def _aa_symbolic(mode: str):
    def symbolic(g, input, output_size, align_corners, scale_factors):
        from torch.onnx._internal.torchscript_exporter import symbolic_helper as sh

        if sh._maybe_get_scalar(align_corners):
            raise SparsaError("ONNX export: an antialiased resize with align_corners=True has no ONNX Resize "
                              "equivalent", hint="quantize without --onnx (the integer PyTorch model still runs)")
        shape = g.op("Shape", input)
        lead = g.op("Slice", shape, g.op("Constant", value_t=_i64([0])), g.op("Constant", value_t=_i64([2])))
        if sh._is_none(output_size):
            raise SparsaError("ONNX export: an antialiased resize by scale factor is not supported",
                              hint="quantize without --onnx (the integer PyTorch model still runs)")
        size = g.op("Concat", lead, g.op("Cast", output_size, to_i=7), axis_i=0)  # 7: INT64
        none = sh._optional_input_placeholder_tensor(g)
        kw = {"cubic_coeff_a_f": -0.5} if mode == "cubic" else {}
        return g.op("Resize", input, none, none, size, mode_s=mode, coordinate_transformation_mode_s="half_pixel",
                    exclude_outside_i=1, **kw)

    return symbolic


def _i64(v):
    import torch

    return torch.tensor(v, dtype=torch.int64)


def register() -> None:
    """Teach the exporter the antialiased resizes (once per process)."""
    global _registered
    if _registered:
        return
    from torch.onnx import register_custom_op_symbolic

    for name, mode in _AA_OPS.items():
        register_custom_op_symbolic(name, _aa_symbolic(mode), EXPORT_OPSET)
    _registered = True


def export(model, args: tuple, path: str, **kwargs) -> None:
    """`torch.onnx.export(..., opset_version=17, dynamo=False)` with `register()`'s symbolics; an op the
    exporter cannot write is a SparsaError that names it."""
    import torch
    from torch.onnx.errors import UnsupportedOperatorError

    register()
    try:
        torch.onnx.export(model, args, path, opset_version=EXPORT_OPSET, dynamo=False, **kwargs)
    except UnsupportedOperatorError as e:
        raise SparsaError(f"ONNX export: this model's forward uses an op torch's ONNX exporter cannot write "
                          f"({str(e).splitlines()[0][:200]})",
                          hint="quantize without --onnx: the integer PyTorch model still evaluates and simulates") from e


def needs_antialias(proto) -> bool:
    return any(n.op_type == "Resize" and _exclude_outside(n) for n in proto.graph.node)


def set_antialias(proto) -> int:
    """Add `antialias=1` to the resizes `register()`'s symbolic wrote; the graph must be at opset 18+.
    Returns how many."""
    from onnx import helper

    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    done = 0
    for n in proto.graph.node:
        if n.op_type == "Resize" and _exclude_outside(n) and not any(a.name == "antialias" for a in n.attribute):
            if opset < 18:
                raise SparsaError(f"ONNX graph at opset {opset} has an antialiased resize, which needs opset 18",
                                  hint="report this model")
            n.attribute.append(helper.make_attribute("antialias", 1))
            done += 1
    return done


def _exclude_outside(node) -> bool:
    return any(a.name == "exclude_outside" and a.i == 1 for a in node.attribute)


def finish_file(path) -> None:
    """A float ONNX file written by `export` and used as it is (no integer rewrite): its antialiased
    resizes, if any, get their attribute (the graph converted to opset 18 first)."""
    import onnx

    proto = onnx.load(str(path))
    if not needs_antialias(proto):
        return
    from onnx import version_converter

    proto = version_converter.convert_version(proto, 18)
    set_antialias(proto)
    onnx.save(proto, str(path))
