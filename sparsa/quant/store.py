"""Save / load quantized models: integer codes in safetensors (packed at their bit width), no pickle.

A quantized LoadedModel is saved as an ordinary sparsa model folder (`sparsa.models.save_model`:
sparsa.json, config.json, tokenizer, model.safetensors), which `sparsa.models.load` reads back:
importing this module registers `QuantLinear` as a packed layer kind, stored per layer as
`<name>.qweight` (uint8, codes packed `bits` per value, so a 4-bit layer takes half a byte per
weight; for pruned symmetric weights, when smaller, only the nonzero codes, with `<name>.qmask` a
packed 1-bit nonzero mask), `<name>.w_scale`, `<name>.w_zero_point` (uint8, asym only),
`<name>.bias`, `<name>.a_scale` / `.a_zero_point` (static activations), `<name>.smooth_inv`.
Everything that stays float is float32, or float16 after `half_float_storage_`.

A bare nn.Module (no family adapter, so no model folder) is saved weights-only in the older layout:
`quant.safetensors` (the same tensors) + `quant.json` (per-layer shapes); `load_quantized(dir, base=)`
fills a float module of the same architecture from it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from sparsa.errors import SparsaError
from sparsa.io import atomic_save_safetensors, atomic_write_json, staged_folder
from sparsa.models.layer_kinds import register_layer_kind
from sparsa.quant.api import _set_submodule, float_storage, quant_layers
from sparsa.quant.modules import QuantLinear
from sparsa.quant.primitives import qrange

FORMAT = "sparsa-quant"
VERSION = 2  # 2: per-layer "weight_format" ("dense" | "bitmap" for pruned weights)
_BUFFERS = ("w_scale", "w_zero_point", "bias", "a_scale", "a_zero_point", "smooth_inv")


def pack_codes(q: torch.Tensor, bits: int, scheme: str) -> torch.Tensor:
    """Integer codes -> uint8 bytes, `bits` bits per code (offset to unsigned first)."""
    lo, _ = qrange(bits, scheme)
    u = (q.to(torch.int16) - lo).reshape(-1).numpy().astype(np.uint8)
    if bits == 8:
        return torch.from_numpy(u.copy())
    bitplanes = np.unpackbits(u[:, None], axis=1, bitorder="little")[:, :bits]  # [n, bits]
    return torch.from_numpy(np.packbits(bitplanes.reshape(-1), bitorder="little"))


def unpack_codes(packed: torch.Tensor, bits: int, scheme: str, shape, dtype: torch.dtype,
                 where: str = "qweight") -> torch.Tensor:
    lo, hi = qrange(bits, scheme)
    n = math.prod(shape)
    p = packed.numpy().astype(np.uint8)
    if bits == 8:
        u = p[:n]
    else:
        planes = np.unpackbits(p, bitorder="little")[: n * bits].reshape(n, bits)
        u = np.packbits(np.pad(planes, ((0, 0), (0, 8 - bits))), axis=1, bitorder="little")[:, 0]
    # a stored code past the scheme's range (8-bit sym byte 255 = +128) would wrap in the int8 buffer or
    # leave the range the integer kernels and the ONNX export assume: a corrupt file, not a weight
    if u.size and int(u.max()) > hi - lo:
        raise SparsaError(f"{where}: stored code {int(u.max()) + lo} is outside the {bits}-bit {scheme} range "
                          f"[{lo}, {hi}]", hint="the folder is corrupt; re-create it")
    return (torch.from_numpy(u.astype(np.int16)) + lo).reshape(shape).to(dtype)


def pack_layer(q: QuantLinear) -> dict[str, torch.Tensor]:
    """The tensors a QuantLinear is stored as (names relative to the layer)."""
    out = {}
    if q.weight_format() == "bitmap":  # pruned weights: nonzero mask (1 bit per weight) + the nonzero codes, packed
        nz = q.qweight != 0
        out["qmask"] = torch.from_numpy(np.packbits(nz.reshape(-1).numpy(), bitorder="little"))
        out["qweight"] = pack_codes(q.qweight[nz], q.bits, q.scheme)
    else:
        out["qweight"] = pack_codes(q.qweight, q.bits, q.scheme)
    for b in _BUFFERS:
        t = getattr(q, b)
        if t is not None:
            out[b] = t
    return out


@torch.no_grad()
def unpack_layer(q: QuantLinear, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Fill `q` (built at its recorded shape) from the tensors `pack_layer` stored."""
    shape = (q.out_features, q.in_features)
    n = math.prod(shape)
    packed = tensors.get("qweight")
    if packed is None or packed.dtype != torch.uint8 or packed.dim() != 1:
        raise SparsaError(f"{where}: the packed integer codes (qweight, uint8) are missing or malformed",
                          hint="the folder is corrupt; re-create it")
    mask = tensors.get("qmask")
    if mask is not None:
        if mask.dtype != torch.uint8 or mask.numel() != math.ceil(n / 8):
            raise SparsaError(f"{where}: qmask holds {mask.numel()} bytes, the layer needs {math.ceil(n / 8)}",
                              hint="the folder is corrupt; re-create it")
        nz = np.unpackbits(mask.numpy(), bitorder="little")[:n].astype(bool)
        nnz = int(nz.sum())
        if packed.numel() != math.ceil(nnz * q.bits / 8):
            raise SparsaError(f"{where}: {packed.numel()} code bytes for {nnz} nonzero {q.bits}-bit codes",
                              hint="the folder is corrupt; re-create it")
        codes = torch.zeros(n, dtype=q.qweight.dtype)
        codes[torch.from_numpy(nz)] = unpack_codes(packed, q.bits, q.scheme, (nnz,), q.qweight.dtype, where)
        q.qweight.copy_(codes.reshape(shape))
    else:
        if packed.numel() != math.ceil(n * q.bits / 8):
            raise SparsaError(f"{where}: {packed.numel()} code bytes, a {shape} {q.bits}-bit layer needs "
                              f"{math.ceil(n * q.bits / 8)}", hint="the folder is corrupt; re-create it")
        q.qweight.copy_(unpack_codes(packed, q.bits, q.scheme, shape, q.qweight.dtype, where))
    for b in _BUFFERS:
        own, t = getattr(q, b), tensors.get(b)
        if own is None:
            continue
        if t is None or t.shape != own.shape:
            raise SparsaError(f"{where}: {b} is missing or has the wrong shape", hint="the folder is corrupt; re-create it")
        own.copy_(t)


register_layer_kind("QuantLinear", QuantLinear.from_shape, pack=pack_layer, unpack=unpack_layer)


def save_quantized(model, directory, *, source: str | None = None, overwrite: bool = False) -> Path:
    """Write a quantized model to `directory` as a whole folder (see `sparsa.io.staged_folder`; an
    existing non-empty one only with `overwrite`, which replaces it).

    A LoadedModel becomes a sparsa model folder (`sparsa.models.load` reads it; nothing in it names a
    path outside it). A bare nn.Module is stored weights-only (quant.safetensors + quant.json; reload
    with `load_quantized(dir, base=a float module of the same architecture)`); `source` is recorded
    there as a label."""
    out = Path(directory)
    loaded = model if hasattr(model, "adapter") else None
    module = loaded.model if loaded is not None else model
    qls = quant_layers(module)
    if not qls:
        raise SparsaError("the model has no quantized layers", hint="run sparsa.quant.quantize_ first")
    if loaded is not None:
        return loaded.save(out, overwrite=overwrite)
    return _save_weights_only(module, qls, out, source, overwrite)


def _save_weights_only(module, qls, out: Path, source, overwrite: bool) -> Path:
    tensors, layers, tied, seen = {}, {}, {}, {}
    qprefixes = tuple(n + "." for n in qls)
    for k, v in module.state_dict().items():
        if k.startswith(qprefixes):
            continue
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), tuple(v.stride()))
        if key in seen:  # tied tensors are stored once
            tied[k] = seen[key]
            continue
        seen[key] = k
        tensors[k] = v
    for name, q in qls.items():
        tensors.update({f"{name}.{k}": v for k, v in pack_layer(q).items()})
        layers[name] = {**q.sparsa_shape(), "weight_format": q.weight_format()}
    fstore = float_storage(module)
    if fstore == "float16":  # lossless: half_float_storage_ rounded these values to float16 already
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    meta = {"format": FORMAT, "version": VERSION, "source": source, "layers": layers, "tied": tied,
            "config": getattr(module, "_sparsa_quant_config", None), "float_storage": fstore}
    with staged_folder(out, overwrite=overwrite) as d:
        atomic_save_safetensors(d / "quant.safetensors", tensors, metadata={"format": "pt"})
        atomic_write_json(d / "quant.json", meta)
    return out


def load_quantized(directory, base=None):
    """Rebuild a quantized model saved by `save_quantized`.

    A model folder loads with `sparsa.models.load` (`base` is not needed). A weights-only folder
    (quant.json, also the layout `sparsa quantize` wrote before its --out became a model folder)
    fills `base` (a LoadedModel or nn.Module of the same float architecture; by default the
    `source` recorded at save time, loaded with `sparsa.models.load`).
    Returns the same kind of object as `base` (a LoadedModel by default).
    """
    d = Path(directory)
    if (d / "sparsa.json").is_file():
        from sparsa.models import load

        return load(d)
    jpath, wpath = d / "quant.json", d / "quant.safetensors"
    if not jpath.is_file() or not wpath.is_file():
        raise SparsaError(f"{d} is not a quantized-model folder (no sparsa.json, nor quant.json / quant.safetensors)",
                          hint="create it with `sparsa quantize MODEL --out DIR` or save_quantized()")
    meta = json.loads(jpath.read_text())
    if meta.get("format") != FORMAT:
        raise SparsaError(f"{jpath} is not a sparsa quantized-model description")
    if meta.get("version", 0) > VERSION:
        raise SparsaError(f"{d} was written by a newer sparsa", hint="upgrade sparsa")
    if base is None:
        if not meta.get("source"):
            raise SparsaError(f"{d} records no source model to rebuild the architecture from",
                              hint="pass base= a model with the same architecture")
        from sparsa.models import load

        base = load(meta["source"])
    module = base.model if hasattr(base, "adapter") else base
    from safetensors.torch import load_file

    tensors = load_file(str(wpath))
    for name, info in meta["layers"].items():
        q = QuantLinear(info["in"], info["out"], bits=info["bits"], scheme=info["scheme"], per_channel=info["per_channel"],
                        has_bias=info["has_bias"], activations=info["activations"], act_bits=info["act_bits"],
                        act_scheme=info["act_scheme"], smooth=info.get("smooth", False))
        own = {b: tensors.pop(f"{name}.{b}") for b in ("qweight", "qmask", *_BUFFERS) if f"{name}.{b}" in tensors}
        unpack_layer(q, own, f"{wpath}: {name}")
        try:
            _set_submodule(module, name, q)
        except AttributeError as e:
            raise SparsaError(f"the base model has no layer {name!r}", hint="pass base= the model it was quantized from") from e
    for alias, target in meta.get("tied", {}).items():
        if target in tensors:
            tensors[alias] = tensors[target]
    missing, unexpected = module.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not k.startswith(tuple(n + "." for n in meta["layers"]))]
    if missing or unexpected:
        raise SparsaError(f"{d} does not fit the base model: missing {missing[:3]}, unexpected {unexpected[:3]}",
                          hint="pass base= the model it was quantized from")
    if meta.get("config") is not None:
        module._sparsa_quant_config = meta["config"]
    if meta.get("float_storage", "float32") != "float32":  # values were widened back to float32 by copy_
        module._sparsa_float_storage = meta["float_storage"]
    module.eval()
    return base
