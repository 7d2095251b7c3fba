"""Real integer deployment: ONNX models whose quantized layers hold integer weights and run on
ONNX Runtime's integer kernels (MatMulInteger / DynamicQuantizeMatMul / QAttention).

How: the quantized model is exported in float with its *dequantized* weights
(`torch.onnx.export(..., dynamo=False)`), then every MatMul / Gemm / fused Attention whose weight
equals a `QuantLinear`'s dequantized weight is rewritten to integer ops that read sparsa's own
integer codes and scales (the float weight disappears from the file). Nothing is re-quantized by
ONNX Runtime, so the ORT model computes exactly what sparsa's integer simulation computes.

Modes (activation side):
- "dynamic": `DynamicQuantizeLinear` (uint8, per tensor, range from each input at run time) ->
  `MatMulInteger` -> Cast -> Mul(s_x · s_w). ORT fuses this to DynamicQuantizeMatMul.
- "static": `QuantizeLinear` with the calibrated scale -> `MatMulInteger` -> Cast -> Mul.
  Symmetric static export has no zero point anywhere: QuantizeLinear gets no zero-point input
  (opset 21 `output_dtype=INT8`) and MatMulInteger gets none either (ONNX default: 0).

Weight storage: int8 codes as they are (`weight_dtype="int8"`), or shifted by +128 to uint8
with a single zero point 128 (`weight_dtype="uint8"`). The two are the same integers. ORT's
u8×s8 kernel on AVX2 CPUs without VNNI (vpmaddubsw) sums pairs of u8·s8 products in int16 and
saturates for 8-bit codes (measured: errors up to 1e5 on random codes), but not for 7-bit codes
(2·255·63 = 32130 < 32767, ORT's "reduce_range"); with VNNI it accumulates in int32, exact for 8-bit
codes too; u8×u8 is exact for any codes but slower. Default (None): chosen per CPU
(`sparsa.quant.kernels.choose_weight_storage`): int8 when every layer has symmetric codes of at most
7 bits, or 8 bits on a VNNI CPU (or in static mode), else uint8. s8×s8 (symmetric activations) is
exact but ~70x slower on such CPUs.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sparsa.errors import SparsaError
from sparsa.quant import export_lengths as lengths
from sparsa.metrics.cpu import cpu_info
from sparsa.quant.api import dequantize_model_, quant_layers
from sparsa.quant.embeddings import check_storage, rewrite_gathers
from sparsa.quant import onnx_trace
from sparsa.quant.modules import QuantLinear

OPSET = 21
ONNX_FILE = "model_int8.onnx"  # a model folder's integer ONNX export (sparsa quantize --onnx, a recipe's quantize stage)


def folder_onnx(folder) -> Path | None:
    """The integer ONNX file a model folder holds, or None (a built-in name, or a folder without one)."""
    path = Path(folder) / ONNX_FILE
    return path if path.is_file() else None


class PositionalWrapper(nn.Module):
    """The TorchScript exporter passes positional args; HF models want keywords.

    The wrapper takes the wrapped model's train/eval mode: the exporter switches the module it is
    given to eval for tracing and afterwards restores *the wrapper's* mode recursively, so a fresh
    (training-mode) wrapper would leave the exported model in training mode, dropout on."""

    def __init__(self, model, names):
        super().__init__()
        self.model, self.names = model, list(names)
        self.train(model.training)

    def forward(self, *args):
        out = self.model(**dict(zip(self.names, args)))
        if isinstance(out, torch.Tensor):
            return out
        if hasattr(out, "last_hidden_state") and out.last_hidden_state is not None:
            return out.last_hidden_state
        if hasattr(out, "logits"):
            return out.logits
        return out[0]


def export_onnx(model, path, *, inputs: dict | None = None, seq_len: int | None = None, mode: str = "auto",
                weight_dtype: str | None = None, fuse: bool | str = "auto", fast_gelu: bool = False,
                skip_layernorm: bool = False, embeddings: str = "int8", cpu_isa: list[str] | None = None) -> Path:
    """Export a quantized model (LoadedModel or nn.Module with QuantLinear layers) to integer ONNX.

    inputs: example inputs (default: `loaded.example_inputs(1, seq_len)`); batch and sequence
      axes are exported dynamic. mode: "dynamic" | "static" | "auto" (static if the layers have
      calibrated activation scales, else dynamic). fuse: BERT-family only, run ONNX Runtime's
      transformer optimizer first (Attention / SkipLayerNorm / BiasGelu fusions) and quantize the
      fused Attention's QKV weight with sparsa's codes as QAttention; "auto" fuses BERT models
      in dynamic mode when every layer has the same head count. fast_gelu (with fuse): ORT's
      tanh-approximated FastGelu instead of the exact erf GELU (faster; the model then differs
      from sparsa's simulation by the approximation, ~1e-3 per activation).
      skip_layernorm: False (default) keeps every residual sum in front of a LayerNormalization as its
      own `Sum` op (ORT's BERT fusion's SkipLayerNormalization is split back, the MatMul bias first so
      ONNX Runtime folds it into DynamicQuantizeMatMul). ONNX Runtime's optimizer fuses Add +
      LayerNormalization into SkipLayerNormalization in every session, and ORT 1.32's CPU kernel for it
      is the slow one: 0.13 ms against 0.04 ms for Sum + LayerNormalization on 128 × 384 (AMD EPYC,
      AVX-512), 1.3 ms per MiniLM run on the AVX2 test machine. The fusion matches `Add` only, so the
      file runs the fast form in any InferenceSession, with no session option. True leaves the
      residual Adds to ORT's fusion. Same values either way.
    embeddings: how the embedding tables are stored, "int8" (default), "int4" or "float": integer
      rows with one scale per row, gathered and dequantized in the graph (`sparsa.quant.embeddings`;
      `with_quantized_embeddings` is sparsa's simulation of them). MiniLM: a 21.4 MB file instead of
      58.5 MB at a held-out cosine cost of 0.0000-0.0001 (BENCHMARKS.md). With fuse, ORT's
      EmbedLayerNormalization fusion is left off (it reads float tables).
    weight_dtype: None picks the weight storage for the CPU features `cpu_isa` (default: this CPU's):
      see the module notes; "int8" / "uint8" override the choice.
    The file's metadata records the embedding storage, the layers left in float, the exporting CPU's
    model, the ISA features the storage was chosen for, the storage and why, and whether it needs VNNI
    (`export_info`; `onnx_session` refuses such a file on a CPU without). Returns the path written.
    """
    path = Path(path)
    loaded = model if hasattr(model, "adapter") else None
    module = loaded.model if loaded is not None else model
    qls = quant_layers(module)
    if not qls:
        raise SparsaError("the model has no quantized layers", hint="run sparsa.quant.quantize_(model, config) first")
    if mode == "auto":
        mode = "static" if all(q.activations == "static" for q in qls.values()) else "dynamic"
    if mode not in ("dynamic", "static"):
        raise SparsaError(f"export mode {mode!r} is unknown", hint="use 'dynamic', 'static' or 'auto'")
    if mode == "static":
        bad = [n for n, q in qls.items() if q.activations != "static"]
        if bad:
            raise SparsaError(f"static export needs calibrated activation scales; {bad[:3]} have none",
                              hint="quantize with activations='static' and calibration data, or export mode='dynamic'")
    if mode == "dynamic":
        bad = [n for n, q in qls.items() if q.activations == "dynamic" and (q.act_scheme, q.act_bits) != ("asym", 8)]
        if bad:
            raise SparsaError(f"dynamic export quantizes activations like ONNX DynamicQuantizeLinear (8-bit asym); "
                              f"{bad[:3]} simulate another activation scheme",
                              hint="quantize with act_scheme='asym', act_bits=8, or use static activations")
    from sparsa.quant.kernels import choose_weight_storage, needs_vnni, this_cpu_isa

    isa = this_cpu_isa() if cpu_isa is None else list(cpu_isa)
    if weight_dtype is None:  # u8×s8 kernels where they are exact on this CPU, else u8×u8
        weight_dtype, storage_why = choose_weight_storage(qls.values(), mode, isa)
    else:
        storage_why = "set by the caller"
    if weight_dtype not in ("int8", "uint8"):
        raise SparsaError(f"weight_dtype {weight_dtype!r} is unknown", hint="use 'int8' or 'uint8'")
    if mode == "static" and weight_dtype == "uint8" and any(q.act_scheme == "sym" for q in qls.values()):
        raise SparsaError("symmetric static export stores weights as int8 (no zero point)", hint="use weight_dtype='int8'")
    check_storage(embeddings)
    if inputs is None:
        if loaded is None:
            raise SparsaError("export_onnx needs example inputs for a plain nn.Module", hint="pass inputs={name: tensor}")
        inputs = loaded.example_inputs(batch=1, seq_len=seq_len)
    if fuse == "auto":
        heads = getattr(getattr(loaded, "config", None), "sparsa_heads_per_layer", None)
        fuse = (loaded is not None and loaded.family == "bert" and mode == "dynamic"
                and not (heads and len(set(heads)) > 1))
    if fast_gelu and not fuse:
        raise SparsaError("fast_gelu acts on ONNX Runtime's BERT fusion", hint="export with fuse=True")
    if fuse and (loaded is None or loaded.family != "bert"):
        raise SparsaError("fuse=True uses ONNX Runtime's BERT optimizer and needs a BERT-family LoadedModel",
                          hint="export without fuse")

    float_model = copy.deepcopy(module).eval()
    table = _weight_table(qls)
    dequantize_model_(float_model, smooth_mul=False)  # _rewrite inserts each smoothed layer's Mul
    if fuse and hasattr(float_model, "set_attn_implementation"):
        float_model.set_attn_implementation("eager")  # the fusion recognises the eager attention pattern
    import onnx

    with tempfile.TemporaryDirectory(prefix="sparsa-export-") as tmp:
        fpath = Path(tmp) / "float.onnx"
        names = list(inputs)
        dyn = {n: {0: "batch", 1: "seq"} for n in names if inputs[n].dim() >= 2 and _is_sequence(inputs[n])}
        dyn.update({n: {0: "batch"} for n in names if n not in dyn})
        wrapper = PositionalWrapper(float_model, names)
        short = lengths.shorter_inputs(inputs, dyn)
        want = lengths.reference(wrapper, names, short)
        with torch.no_grad():
            onnx_trace.export(wrapper, tuple(inputs[n] for n in names), str(fpath),
                              input_names=names, output_names=["output"], dynamic_axes={**dyn, "output": {0: "batch"}})
        del float_model, wrapper  # the file holds it now; full-size models cannot afford a second float copy
        _release_memory()
        # a graph that only runs at the traced length says so in its declared shapes (see export_lengths)
        bound = want is not None and lengths.length_bound(fpath, short, want)
        fixed_len = lengths.traced_length(inputs, dyn) if bound else None
        del want
        if fuse:
            proto = _ort_fuse(fpath, loaded, fast_gelu, embed_layer_norm=embeddings == "float")
        else:
            proto = onnx.load(str(fpath))
    _release_memory()
    proto = _upgrade_opset(proto)
    onnx_trace.set_antialias(proto)  # (needs opset 18)
    _release_memory()
    if fixed_len:
        lengths.pin_sequence(proto, fixed_len)
        _set_meta(proto, _FIXED_SEQ_KEY, str(fixed_len))
    done: set[str] = set()
    n_rewritten = _rewrite(proto, table, mode, weight_dtype, done)
    # a smoothed layer left in float would miss its Mul (absent layers, e.g. an unused pooler, are fine)
    from onnx import numpy_helper

    left = {_digest(numpy_helper.to_array(i)) for i in proto.graph.initializer}
    lost = [n for k, (n, q, _) in table.items() if q.smooth_inv is not None and n not in done and k in left]
    if lost:
        raise SparsaError(f"smoothed layers {lost[:3]} were not found as integer ops in the exported graph",
                          hint="report this model; export without smoothing meanwhile")
    if not skip_layernorm:
        split_skip_layernorm(proto)
    if fuse:
        _gelu_bias_into_gemm(proto)
    tables = rewrite_gathers(proto, module, embeddings)
    _set_meta(proto, _EMBEDDINGS_KEY, embeddings if tables else "float")
    _set_meta(proto, _TABLES_KEY, ",".join(tables))
    _set_meta(proto, _FLOAT_LAYERS_KEY, ",".join(_float_layers(proto, module)))
    _set_meta(proto, _CPU_KEY, cpu_info()["model"])
    _set_meta(proto, _ISA_KEY, ",".join(isa))
    _set_meta(proto, _STORAGE_KEY, weight_dtype)
    _set_meta(proto, _STORAGE_WHY_KEY, storage_why)
    _set_meta(proto, _NEEDS_KEY, "vnni" if needs_vnni(qls.values(), mode, weight_dtype) else "")
    if n_rewritten == 0:  # layers outside the exported output (e.g. an unused pooler) are simply absent
        raise SparsaError("none of the quantized layers was found in the exported graph",
                          hint="a layer's weight was transformed on export; report this model")
    from sparsa.io import atomic_write_bytes

    atomic_write_bytes(path, proto.SerializeToString())
    return path


def _is_sequence(t: torch.Tensor) -> bool:
    return t.dtype in (torch.int64, torch.int32) or t.dim() == 3


def _ort_fuse(fpath: Path, loaded, fast_gelu: bool = False, embed_layer_norm: bool = True) -> Path:
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    cfg = loaded.config
    heads = getattr(cfg, "sparsa_heads_per_layer", None)
    if heads and len(set(heads)) > 1:  # the fusion takes one head count for the whole model
        raise SparsaError("fuse=True needs the same number of heads in every layer", hint="export without fuse")
    opts = FusionOptions("bert")
    opts.enable_gelu_approximation = fast_gelu
    opts.enable_embed_layer_norm = embed_layer_norm  # off for integer tables: EmbedLayerNormalization reads float ones
    n_heads = heads[0] if heads else cfg.num_attention_heads
    head_dim = cfg.hidden_size // cfg.num_attention_heads  # head pruning keeps the head size
    # hidden_size is the attention's width (heads x head size): the model width only while no head is pruned.
    # With pruned heads the fusion also warns that it differs from the model width, and fuses correctly
    # (QAttention takes its shapes from the weights; tested): that warning is silenced here.
    import logging

    fusion_log = logging.getLogger("fusion_attention")  # ORT imports its fusions as top-level modules
    level = fusion_log.level
    if n_heads * head_dim != cfg.hidden_size:
        fusion_log.setLevel(logging.ERROR)
    try:
        # optimize_model(opt_level=1) in two steps with the weights out of the way: ONNX Runtime's basic
        # graph optimisation writes them to a file beside its output, and the Python fusions (which
        # copy the model several times for shape inference) run on a model that holds only the
        # weights they read. Same result as optimize_model, byte for byte (tests/test_quant_export_memory.py).
        basic = _ort_basic_optimize(fpath)
        _release_memory()
        proto = _load_for_fusion(basic, tables=embed_layer_norm)
        kw = dict(num_heads=n_heads, hidden_size=n_heads * head_dim, optimization_options=opts)
        try:
            om = optimizer.optimize_by_fusion(proto, "bert", **kw)
        except _external_read_errors():  # a fusion read a weight left in the file: fuse with all of them loaded
            del proto
            om = optimizer.optimize_by_fusion(_load_all(basic), "bert", **kw)
    finally:
        fusion_log.setLevel(level)
    om.topological_sort()  # as optimize_model's save_model_to_file does
    proto = om.model
    del om
    _release_memory()
    _load_weights(proto, basic.parent)
    return proto


def _ort_basic_optimize(fpath: Path) -> Path:
    """ONNX Runtime's basic graph optimisation of `fpath` (what optimize_by_onnxruntime(opt_level=1) does), its
    result written beside it with the initializers of 1 KiB or more in an external data file. Weight pre-packing
    is off: the session is only built to write the optimised graph, and pre-packed copies of every MatMul weight
    would be its largest buffer."""
    import onnxruntime as ort

    out = fpath.with_name("basic.onnx")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(out)
    so.add_session_config_entry("session.optimized_model_external_initializers_file_name", out.name + ".data")
    so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", str(_STASH_MIN_BYTES))
    so.add_session_config_entry("session.disable_prepacking", "1")
    ort.InferenceSession(str(fpath), so, providers=["CPUExecutionProvider"], disabled_optimizers=["ConstantSharing"])
    return out


def _load_for_fusion(path: Path, tables: bool):
    """The model at `path` with the weights ORT's BERT fusions read loaded (vectors: biases, norms; the Q/K/V
    weights, which the Attention fusion concatenates: MatMuls that share their input with two others; with
    `tables`, embedding tables, which the EmbedLayerNormalization fusion reads) and the others left in the file."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

    proto = onnx.load(str(path), load_external_data=False)
    by_input: dict[str, list] = {}
    for n in proto.graph.node:
        if n.op_type == "MatMul":
            by_input.setdefault(n.input[0], []).append(n)
    read = {n.input[1] for group in by_input.values() if len(group) >= 3 for n in group}
    if tables:
        read |= {n.input[0] for n in proto.graph.node if n.op_type == "Gather"}
    for t in proto.graph.initializer:
        if uses_external_data(t) and (len(t.dims) < 2 or t.name in read):
            load_external_data_for_tensor(t, str(path.parent))
    return proto


def _load_weights(proto, folder: Path) -> None:
    """Bring the weights left in the external file back into `proto`, as if it had never had one."""
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

    for t in proto.graph.initializer:
        if uses_external_data(t):
            load_external_data_for_tensor(t, str(folder))
        # ORT's external-data writer sets these two fields to their defaults: unset, as in an in-memory model
        t.ClearField("data_location")
        if not t.doc_string:
            t.ClearField("doc_string")


def _load_all(path: Path):
    import onnx

    proto = onnx.load(str(path))  # loads the external data file beside it
    _load_weights(proto, path.parent)
    return proto


def _external_read_errors() -> tuple:
    from onnx.checker import ValidationError

    return (OSError, ValidationError)


def _upgrade_opset(proto):
    from onnx import version_converter

    cur = {o.domain: o.version for o in proto.opset_import}
    if cur.get("", 0) < OPSET:
        ms = [o for o in proto.opset_import if o.domain not in ("", "ai.onnx")]
        stash = _stash_raw_data(proto)  # the converter copies the whole model several times: not its weights
        proto = version_converter.convert_version(proto, OPSET)
        _restore_raw_data(proto, stash)
        have = {o.domain for o in proto.opset_import}
        proto.opset_import.extend([o for o in ms if o.domain not in have])
    return proto


_STASH_MIN_BYTES = 1024  # small constants stay in place: the converter may read them


def _stash_raw_data(proto) -> dict[str, bytes]:
    """Take the large initializers' bytes out of `proto` (marked as external data, shapes kept), so that a
    pass that copies the model (ONNX's version converter serializes it to C++ and back) copies no weights."""
    from onnx import TensorProto

    stash = {}
    for t in proto.graph.initializer:
        if t.data_location == TensorProto.DEFAULT and len(t.raw_data) >= _STASH_MIN_BYTES and t.name not in stash:
            stash[t.name] = t.raw_data
            t.ClearField("raw_data")
            t.data_location = TensorProto.EXTERNAL
            t.external_data.add(key="location", value="sparsa-stash")
    return stash


def _restore_raw_data(proto, stash: dict[str, bytes]) -> None:
    from onnx import TensorProto

    for t in proto.graph.initializer:
        if t.name in stash and t.data_location == TensorProto.EXTERNAL:
            del t.external_data[:]
            t.ClearField("data_location")
            t.raw_data = stash[t.name]
    missing = [t.name for t in proto.graph.initializer if t.data_location == TensorProto.EXTERNAL and t.name in stash]
    if missing:  # never write a file that points at data that is not there
        raise SparsaError(f"ONNX opset conversion lost the weights of {missing[:3]}", hint="report this model")


def _release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the system (glibc keeps them otherwise): the
    export's steps each hold a model-sized buffer for a while, and their peaks must not stack."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        pass


def _digest(a: np.ndarray) -> bytes:
    """A weight's identity by content (its bytes, as the lookups compare them): 32 bytes instead of a copy."""
    return hashlib.blake2b(np.ascontiguousarray(a).data, digest_size=32).digest()


# ------------------------------------------------------------------------------------- rewrite


def _weight_table(qls: dict[str, QuantLinear]) -> dict[bytes, tuple[str, QuantLinear]]:
    """Digest of each layer's dequantized weight bytes (transposed, as MatMul holds it, or not) -> layer."""
    table = {}
    for name, q in qls.items():
        w = q.dequantized_weight().detach().float().numpy()
        table[_digest(w.T)] = (name, q, "T")
        table[_digest(w)] = (name, q, "N")
    return table


def _codes(q: QuantLinear, weight_dtype: str):
    """Integer weight [K, N] for MatMulInteger, its zero point (or None), and per-column scale [N]."""
    codes = q.qweight.detach().cpu().numpy().T  # [in, out]
    scale = q.w_scale.detach().float().numpy()
    if q.w_zero_point is not None:  # asym weights: uint8 codes with per-channel zero point
        zp = q.w_zero_point.detach().cpu().numpy().astype(np.uint8)
        return np.ascontiguousarray(codes), zp if q.per_channel else zp.reshape(()), scale
    if weight_dtype == "uint8":
        return np.ascontiguousarray((codes.astype(np.int16) + 128).astype(np.uint8)), np.array(128, np.uint8), scale
    return np.ascontiguousarray(codes.astype(np.int8)), None, scale


def _rewrite(proto, table, mode: str, weight_dtype: str, done: set | None = None) -> int:
    from onnx import TensorProto, helper, numpy_helper

    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    # a weight shared between layers (ALBERT's one layer run N times, tied projections) reaches its
    # second and later MatMuls through Identity nodes of the one initializer: follow them
    aliases = _identity_aliases(g, inits)
    inits.update({out: inits[src] for out, src in aliases.items()})
    used_init = set()
    uses: dict[str, int] = {}  # layer -> MatMuls rewritten so far: node and tensor names stay unique per use
    weight_consts: dict[tuple, str] = {}  # (layer, what) -> initializer: one copy of the codes however many uses
    new_nodes, extra_inits = [], []
    dq_cache: dict[tuple, tuple] = {}
    smooth_cache: dict[tuple, str] = {}
    done = set() if done is None else done
    count = 0

    def const(name, arr):
        extra_inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def layer_const(layer: str, what: str, name: str, arr) -> str:
        key = (layer, what)
        if key not in weight_consts:
            weight_consts[key] = const(name, arr)
        return weight_consts[key]

    def smoothed(x: str, q: QuantLinear, tag: str) -> str:
        """x · smooth_inv (SmoothQuant), one Mul per distinct (input, scale) pair."""
        if q.smooth_inv is None:
            return x
        inv = q.smooth_inv.detach().float().numpy()
        key = (x, inv.tobytes())
        if key not in smooth_cache:
            smooth_cache[key] = f"{x}_smooth{tag}"
            new_nodes.append(helper.make_node("Mul", [x, const(f"{tag}_smooth_inv", inv)], [smooth_cache[key]],
                                              name=f"{tag}_smooth"))
        return smooth_cache[key]

    def quant_input(x: str, q: QuantLinear, tag: str):
        """Integer codes of activation `x` (shared between layers reading the same tensor)."""
        x = smoothed(x, q, tag)
        key = (x, mode, None if mode == "dynamic" else (float(q.a_scale), q.a_zero_point is not None and int(q.a_zero_point)))
        if key in dq_cache:
            return dq_cache[key]
        if mode == "dynamic":
            out = (f"{x}_q{tag}", f"{x}_s{tag}", f"{x}_z{tag}")
            new_nodes.append(helper.make_node("DynamicQuantizeLinear", [x], list(out), name=f"{tag}_dql"))
        else:
            s = const(f"{tag}_a_scale", q.a_scale.detach().float().numpy().reshape(()))
            ins = [x, s]
            attrs = {}
            z = None
            if q.a_zero_point is not None:
                z = const(f"{tag}_a_zero_point", q.a_zero_point.detach().numpy().astype(np.uint8).reshape(()))
                ins.append(z)
            else:
                attrs["output_dtype"] = TensorProto.INT8  # no zero point at all (opset 21)
            qx = f"{x}_q{tag}"
            new_nodes.append(helper.make_node("QuantizeLinear", ins, [qx], name=f"{tag}_ql", **attrs))
            if z is None:  # QuantizeLinear saturates to [-128, 127]; sparsa's symmetric grid is narrow
                lo = const(f"{tag}_a_min", np.array(-(2 ** (q.act_bits - 1) - 1), np.int8))
                hi = const(f"{tag}_a_max", np.array(2 ** (q.act_bits - 1) - 1, np.int8))
                new_nodes.append(helper.make_node("Clip", [qx, lo, hi], [qx + "_narrow"], name=f"{tag}_narrow"))
                qx += "_narrow"
            elif q.act_bits < 8:  # sub-8-bit codes live in the low part of the uint8 range
                hi = const(f"{tag}_a_max", np.array(2**q.act_bits - 1, np.uint8))
                new_nodes.append(helper.make_node("Clip", [qx, "", hi], [qx + "_narrow"], name=f"{tag}_narrow"))
                qx += "_narrow"
            out = (qx, s, z)
        dq_cache[key] = out
        return out

    def integer_matmul(x: str, y: str, q: QuantLinear, tag: str, codes, zp, scale, layer: str):
        qx, sx, zx = quant_input(x, q, tag)
        w = layer_const(layer, "wq", f"{tag}_wq", codes)
        ins = [qx, w]
        wz = layer_const(layer, "wzp", f"{tag}_wzp", zp) if zp is not None else ""
        if zx or wz:
            ins += [zx or "", wz] if wz else [zx]
        acc = f"{tag}_acc"
        new_nodes.append(helper.make_node("MatMulInteger", ins, [acc], name=f"{tag}_mmi"))
        accf = f"{tag}_accf"
        new_nodes.append(helper.make_node("Cast", [acc], [accf], to=TensorProto.FLOAT, name=f"{tag}_cast"))
        if mode == "dynamic":
            sc = f"{tag}_scale"
            new_nodes.append(helper.make_node("Mul", [sx, layer_const(layer, "ws", f"{tag}_ws", scale.astype(np.float32))],
                                              [sc], name=f"{tag}_smul"))
        else:  # the same float32 product the simulation uses
            sc = const(f"{tag}_scale", (q.a_scale.detach().float() * q.w_scale.detach().float()).numpy())
        new_nodes.append(helper.make_node("Mul", [accf, sc], [y], name=f"{tag}_rescale"))

    for node in g.node:
        hit = None
        if node.op_type == "MatMul" and node.input[1] in inits:
            hit = table.get(_digest(numpy_helper.to_array(inits[node.input[1]])))
            if hit is not None and hit[2] != "T":
                hit = None
        elif node.op_type == "Gemm" and len(node.input) >= 2 and node.input[1] in inits:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if attrs.get("transA", 0) == 0 and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0:
                arr = numpy_helper.to_array(inits[node.input[1]])
                h = table.get(_digest(arr))
                want = "N" if attrs.get("transB", 0) else "T"
                hit = h if h is not None and h[2] == want else None
        elif node.op_type == "Attention" and node.domain == "com.microsoft" and node.input[1] in inits:
            if _attention_to_qattention(node, inits, table, new_nodes, const, quant_input, mode, weight_dtype, done):
                used_init.add(node.input[1])
                count += 3
                continue
        if hit is None:
            new_nodes.append(node)
            continue
        name, q, _ = hit
        done.add(name)
        uses[name] = uses.get(name, 0) + 1
        tag = "q_" + name.replace(".", "_") + ("" if uses[name] == 1 else f"_use{uses[name]}")
        codes, zp, scale = _codes(q, weight_dtype)
        used_init.add(node.input[1])
        if node.op_type == "MatMul":
            integer_matmul(node.input[0], node.output[0], q, tag, codes, zp, scale, name)
        else:  # Gemm: integer matmul, then the bias
            mm = f"{tag}_mm"
            integer_matmul(node.input[0], mm if len(node.input) > 2 and node.input[2] else node.output[0],
                           q, tag, codes, zp, scale, name)
            if len(node.input) > 2 and node.input[2]:
                new_nodes.append(helper.make_node("Add", [mm, node.input[2]], [node.output[0]], name=f"{tag}_bias"))
        count += 1

    new_nodes = _without_dead_identities(new_nodes, aliases, {o.name for o in g.output})
    del g.node[:]
    g.node.extend(new_nodes)
    still_used = {i for n in new_nodes for i in n.input}
    keep = [i for i in g.initializer if not (i.name in used_init and i.name not in still_used)]
    del g.initializer[:]
    g.initializer.extend(keep + extra_inits)
    if not any(o.domain == "com.microsoft" for o in proto.opset_import) and any(n.domain == "com.microsoft" for n in new_nodes):
        proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return count


def _identity_aliases(graph, inits: dict) -> dict[str, str]:
    """Identity outputs that stand for an initializer (chains followed): output -> initializer name."""
    aliases: dict[str, str] = {}
    for n in graph.node:
        if n.op_type == "Identity" and n.input and (n.input[0] in inits or n.input[0] in aliases):
            aliases[n.output[0]] = aliases.get(n.input[0], n.input[0])
    return aliases


def _without_dead_identities(nodes: list, aliases: dict[str, str], graph_outputs: set[str]) -> list:
    """Drop the weight Identity nodes no node reads any more (their MatMul became integer), so the float
    initializer behind them is dropped too."""
    while True:
        read = {i for n in nodes for i in n.input} | graph_outputs
        kept = [n for n in nodes if not (n.op_type == "Identity" and n.output[0] in aliases and n.output[0] not in read)]
        if len(kept) == len(nodes):
            return nodes
        nodes = kept


def _attention_to_qattention(node, inits, table, new_nodes, const, quant_input, mode, weight_dtype, done) -> bool:
    """Fused Attention whose weight is [Wq|Wk|Wv]ᵀ of three quantized layers -> QAttention (dynamic only)."""
    from onnx import helper, numpy_helper

    if mode != "dynamic":
        return False
    w = numpy_helper.to_array(inits[node.input[1]])
    k, n3 = w.shape
    if n3 % 3:
        return False
    parts = [table.get(_digest(w[:, i * n3 // 3:(i + 1) * n3 // 3])) for i in range(3)]
    if any(p is None or p[2] != "T" for p in parts):
        return False
    qs = [p[1] for p in parts]
    if any(q.w_zero_point is not None for q in qs) or len({q.per_channel for q in qs}) != 1:
        return False
    inv = {None if q.smooth_inv is None else q.smooth_inv.detach().float().numpy().tobytes() for q in qs}
    if len(inv) != 1:  # one input, so one smoothing: QuantConfig(smooth_fold=True) shares it
        raise SparsaError(f"{parts[0][0]}: Q, K, V are smoothed differently and cannot share one QAttention input",
                          hint="quantize with QuantConfig(smooth_fold=True), or export with fuse=False")
    done.update(p[0] for p in parts)
    cs = [_codes(q, weight_dtype) for q in qs]
    codes = np.concatenate([c[0] for c in cs], axis=1)
    scale = np.concatenate([np.broadcast_to(c[2], (q.out_features,)) for c, q in zip(cs, qs)]).astype(np.float32)
    zp = cs[0][1]
    tag = "q_" + parts[0][0].replace(".", "_").rsplit("_query", 1)[0] + "_qkv"
    qx, sx, zx = quant_input(node.input[0], qs[0], tag)
    ins = [qx, const(f"{tag}_wq", codes), node.input[2], sx, const(f"{tag}_ws", scale),
           node.input[3] if len(node.input) > 3 else "", zx, const(f"{tag}_wzp", zp) if zp is not None else ""]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    new_nodes.append(helper.make_node("QAttention", ins, list(node.output), name=f"{tag}_qattention",
                                      domain="com.microsoft", **attrs))
    return True


# ------------------------------------------------------------------------------------- checks


# model metadata: ORT optimizers the file wants off (files exported before the residual Sum asked for
# SkipLayerNormFusion; `onnx_session` still honours it)
_HINT_KEY = "sparsa.ort.disabled_optimizers"
_EMBEDDINGS_KEY = "sparsa.embeddings"  # float | int8 | int4
_TABLES_KEY = "sparsa.embeddings.tables"  # the tables stored as integers, comma-separated
_FLOAT_LAYERS_KEY = "sparsa.float_layers"  # Linear/Conv layers whose float weights are still in the graph
_CPU_KEY, _ISA_KEY = "sparsa.cpu", "sparsa.cpu.isa"  # where the file was exported (the features chosen for)
_STORAGE_KEY, _STORAGE_WHY_KEY = "sparsa.weights", "sparsa.weights.choice"  # int8 | uint8, and why
_FIXED_SEQ_KEY = "sparsa.seq_len.fixed"  # the one sequence length the graph runs at (export_lengths)
_NEEDS_KEY = "sparsa.cpu.needs"  # "vnni": the file's u8×s8 kernels are exact only on a VNNI CPU


def _float_layers(proto, module) -> list[str]:
    """The Linear / Conv layers of `module` that run in float in the exported graph: kept float by the
    quantization config, or quantized but not recognised as integer ops by the export (their
    dequantized weight is still an initializer, alone or as a slice of a fused Q/K/V weight).
    Layers absent from the graph (e.g. an unused pooler) are not listed."""
    from onnx import numpy_helper

    seen = set()
    for i in proto.graph.initializer:
        a = numpy_helper.to_array(i)
        if a.dtype != np.float32 or a.ndim < 2:
            continue
        seen.add(_digest(a))
        if a.ndim == 2 and a.shape[1] % 3 == 0:  # a fused Attention's [Wq | Wk | Wv]
            seen.update(_digest(p) for p in np.split(a, 3, axis=1))
    out = []
    for name, m in module.named_modules():
        if isinstance(m, QuantLinear):
            w = m.dequantized_weight().detach().float().numpy()
        elif isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            w = m.weight.detach().float().numpy()
        else:
            continue
        forms = (w, np.ascontiguousarray(w.T)) if w.ndim == 2 else (w,)
        if any(_digest(f) in seen for f in forms):
            out.append(name)
    return out


def export_info(path) -> dict:
    """What a sparsa export recorded in its metadata: {"embeddings", "embedding_tables", "float_layers",
    "cpu", "cpu_isa", "weights", "weights_choice", "cpu_needs", "seq_len_fixed"} (strings / lists, the length
    an int or None; files from before these
    keys read as float embeddings, empty strings)."""
    import onnx

    meta = {m.key: m.value for m in onnx.load(str(path), load_external_data=False).metadata_props}

    def items(key):
        return [x for x in meta.get(key, "").split(",") if x]

    return {"embeddings": meta.get(_EMBEDDINGS_KEY, "float"), "embedding_tables": items(_TABLES_KEY),
            "float_layers": items(_FLOAT_LAYERS_KEY), "cpu": meta.get(_CPU_KEY, ""), "cpu_isa": items(_ISA_KEY),
            "weights": meta.get(_STORAGE_KEY, ""), "weights_choice": meta.get(_STORAGE_WHY_KEY, ""),
            "cpu_needs": meta.get(_NEEDS_KEY, ""), "seq_len_fixed": int(meta.get(_FIXED_SEQ_KEY) or 0) or None}


def split_skip_layernorm(proto) -> int:
    """Every residual sum that feeds a LayerNormalization as a `Sum` op of its own, which ONNX Runtime's
    SkipLayerNormFusion (it matches `Add`) leaves alone: fused SkipLayerNormalization ops are split back
    first. Same values. Returns how many sums were written (see `export_onnx(skip_layernorm=...)`)."""
    _unfuse_skip_layernorm(proto)
    return _residual_adds_as_sum(proto)


def _residual_adds_as_sum(proto) -> int:
    """Add(a, b) -> Sum(a, b) where the result goes to a LayerNormalization only and neither operand is a
    constant: the Adds ORT's SkipLayerNormFusion would take. A bias Add stays (ORT folds it into the GEMM
    before it), and so does a pre-LN model's residual stream, which the next block reads too."""
    g = proto.graph
    consts = {i.name for i in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    readers: dict[str, list[str]] = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n.op_type)
    outputs = {o.name for o in g.output}
    k = 0
    for n in g.node:
        r = readers.get(n.output[0], [])
        if (n.op_type == "Add" and n.domain in ("", "ai.onnx") and r and set(r) == {"LayerNormalization"}
                and n.output[0] not in outputs and not any(i in consts for i in n.input)):
            n.op_type = "Sum"
            k += 1
    return k


def _unfuse_skip_layernorm(proto) -> None:
    """SkipLayerNormalization(x, skip, gamma, beta, bias) -> LayerNormalization((x + bias) + skip)."""
    from onnx import helper

    g = proto.graph
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    out = []
    for n in g.node:
        if n.op_type != "SkipLayerNormalization":
            out.append(n)
            continue
        if any(o and o in used for o in n.output[1:3]):  # mean / inverse std: LayerNormalization has them too,
            raise SparsaError(f"{n.name}: its statistics outputs are used; cannot unfuse")  # but not worth it
        eps = [helper.get_attribute_value(a) for a in n.attribute if a.name == "epsilon"]
        x, skip, gamma = n.input[:3]
        beta = n.input[3] if len(n.input) > 3 else ""
        bias = n.input[4] if len(n.input) > 4 else ""
        if bias:
            out.append(helper.make_node("Add", [x, bias], [f"{n.name}_biased"], name=f"{n.name}_bias"))
            x = f"{n.name}_biased"
        total = n.output[3] if len(n.output) > 3 and n.output[3] else f"{n.name}_sum"
        out.append(helper.make_node("Add", [x, skip], [total], name=f"{n.name}_add"))
        out.append(helper.make_node("LayerNormalization", [total, gamma] + ([beta] if beta else []), [n.output[0]],
                                    name=f"{n.name}_ln", axis=-1, epsilon=eps[0] if eps else 1e-12))
    del g.node[:]
    g.node.extend(out)


def _gelu_bias_into_gemm(proto) -> None:
    """BiasGelu(x, b) / FastGelu(x, b) behind an integer GEMM -> Add(x, b) + Gelu / FastGelu(x): ONNX Runtime
    folds the Add into DynamicQuantizeMatMul's bias, and the unbiased kernels are cheaper (MiniLM, 128x1536,
    1 thread: BiasGelu 0.164 ms, Gelu 0.131, FastGelu with bias 0.118, without 0.103). Same values: the
    bias is added before the activation either way."""
    from onnx import helper

    rescaled = {n.output[0] for n in proto.graph.node if n.op_type == "Mul" and n.name.endswith("_rescale")}
    out = []
    for n in proto.graph.node:
        if (n.domain == "com.microsoft" and n.op_type in ("BiasGelu", "FastGelu") and len(n.input) == 2
                and n.input[0] in rescaled and n.input[1]):
            biased = f"{n.name}_biased"
            out.append(helper.make_node("Add", list(n.input), [biased], name=f"{n.name}_bias"))
            out.append(helper.make_node("Gelu" if n.op_type == "BiasGelu" else "FastGelu", [biased], list(n.output),
                                        name=n.name, domain="com.microsoft"))
        else:
            out.append(n)
    del proto.graph.node[:]
    proto.graph.node.extend(out)


def _set_meta(proto, key: str, value: str) -> None:
    for m in proto.metadata_props:
        if m.key == key:
            m.value = value
            return
    proto.metadata_props.add(key=key, value=value)


def session_hints(path) -> list[str]:
    """The ORT graph optimizers a sparsa export asks sessions to leave off (model metadata)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    v = {m.key: m.value for m in proto.metadata_props}.get(_HINT_KEY, "")
    return [x for x in v.split(",") if x]


def onnx_session(path, threads: int = 2, *, spinning: bool = False, disabled_optimizers: list[str] | None = None,
                 cpu_isa: list[str] | None = None):
    """A CPU InferenceSession with `threads` intra-op threads.

    spinning: let the pool threads busy-wait between ops and runs. On for latency measured in a
    block of back-to-back runs of one model (without it each op pays thread wake-ups: 28.0 vs
    18.9 ms for sparsa's INT8 MiniLM here); off (default) for sessions that idle beside other
    work, where spinning threads would steal the cores from whatever runs next.
    disabled_optimizers: ORT graph optimizers to leave off (default: what the file's metadata asks
    for; sparsa's current exports ask for none). A file whose metadata says its integer kernels need
    VNNI is refused (SparsaError) on a CPU without it (`cpu_isa`, default this CPU's features)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    sess = _loaded_session(ort, path, so, disabled_optimizers)
    meta = sess.get_modelmeta().custom_metadata_map  # read from the session: no second parse of the file
    if meta.get(_NEEDS_KEY):
        from sparsa.quant.kernels import check_cpu_runs, this_cpu_isa

        check_cpu_runs(meta[_NEEDS_KEY], path, this_cpu_isa() if cpu_isa is None else cpu_isa)
    if disabled_optimizers is None:  # the file's own hints
        hint = meta.get(_HINT_KEY, "")
        if hint:
            sess = _loaded_session(ort, path, so, [x for x in hint.split(",") if x])
    return sess


def _loaded_session(ort, path, so, disabled_optimizers):
    """ONNX Runtime's session of `path`; a file it cannot load (missing, truncated, not ONNX, an op or
    opset it lacks) is bad input, said as such."""
    if not Path(path).is_file():
        raise SparsaError(f"{path}: no such ONNX file", hint="export it with sparsa quantize --onnx --out DIR")
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=list(disabled_optimizers or []) or None)
    except Exception as e:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...) share no base class
        msg = str(e).split("\n")[0][:300]
        raise SparsaError(f"{path}: ONNX Runtime cannot load this file ({type(e).__name__}: {msg})",
                          hint="re-export it (sparsa quantize --onnx --out DIR); a file copied in part or "
                               "written by a newer exporter fails this way") from e


def zero_points_in(path_or_proto) -> list[str]:
    """Every zero point an ONNX model carries: zero-point inputs of quantized ops, and uint8
    activations produced by DynamicQuantizeLinear (whose zero point is computed at run time)."""
    import onnx

    proto = onnx.load(str(path_or_proto)) if not hasattr(path_or_proto, "graph") else path_or_proto
    zp_slots = {"QuantizeLinear": [2], "DequantizeLinear": [2], "MatMulInteger": [2, 3], "ConvInteger": [2, 3],
                "QLinearMatMul": [2, 5, 7], "QAttention": [6, 7], "DynamicQuantizeMatMul": [3],
                "MatMulIntegerToFloat": [4, 5]}
    found = []
    for n in proto.graph.node:
        if n.op_type == "DynamicQuantizeLinear":
            found.append(f"{n.name}: DynamicQuantizeLinear (run-time zero point)")
        for i in zp_slots.get(n.op_type, []):
            if i < len(n.input) and n.input[i]:
                found.append(f"{n.name}: input {i} ({n.input[i]})")
    found += [f"initializer {i.name}" for i in proto.graph.initializer if "zero_point" in i.name or i.name.endswith("_zp")]
    return found


def integer_initializer_bytes(path) -> dict:
    """Bytes of integer vs float initializers in an ONNX file (what the deployed model really stores)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    out = {"int_bytes": 0, "float_bytes": 0}
    for i in proto.graph.initializer:
        a = numpy_helper.to_array(i)
        out["int_bytes" if a.dtype.kind in "iu" else "float_bytes"] += a.nbytes
    return out
