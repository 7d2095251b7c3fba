"""Save / load quantized models: integer codes in safetensors (packed at their bit width), no pickle.

Folder layout written by `save_quantized(model, dir)`:
- `quant.safetensors`: for every QuantLinear `<name>.qweight` (uint8, codes packed `bits` per
  value, so a 4-bit layer takes half a byte per weight; for pruned symmetric weights, when smaller,
  only the nonzero codes, with `<name>.qmask` a packed 1-bit nonzero mask), `<name>.w_scale`,
  `<name>.w_zero_point` (uint8, asym only), `<name>.bias`, `<name>.a_scale` / `.a_zero_point`
  (static activations); plus every tensor of the model that stays in float. Float tensors are
  float32, or float16 after `half_float_storage_` (`float_storage` in quant.json).
- `quant.json`: format, config, one entry per quantized layer (shape, bits, scheme, ...), and
  `source`: the float model it came from (a sparsa model name or folder) to rebuild the
  architecture on load.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sparsa.errors import SparsaError
from sparsa.io import atomic_save_safetensors, atomic_write_json, staged_folder
from sparsa.quant.api import _set_submodule, float_storage, quant_layers
from sparsa.quant.modules import QuantLinear
from sparsa.quant.primitives import qrange

FORMAT = "sparsa-quant"
VERSION = 2  # 2: per-layer "weight_format" ("dense" | "bitmap" for pruned weights)


def pack_codes(q: torch.Tensor, bits: int, scheme: str) -> torch.Tensor:
    """Integer codes -> uint8 bytes, `bits` bits per code (offset to unsigned first)."""
    lo, _ = qrange(bits, scheme)
    u = (q.to(torch.int16) - lo).reshape(-1).numpy().astype(np.uint8)
    if bits == 8:
        return torch.from_numpy(u.copy())
    bitplanes = np.unpackbits(u[:, None], axis=1, bitorder="little")[:, :bits]  # [n, bits]
    return torch.from_numpy(np.packbits(bitplanes.reshape(-1), bitorder="little"))


def unpack_codes(packed: torch.Tensor, bits: int, scheme: str, shape, dtype: torch.dtype) -> torch.Tensor:
    lo, _ = qrange(bits, scheme)
    n = math.prod(shape)
    p = packed.numpy().astype(np.uint8)
    if bits == 8:
        u = p[:n]
    else:
        planes = np.unpackbits(p, bitorder="little")[: n * bits].reshape(n, bits)
        u = np.packbits(np.pad(planes, ((0, 0), (0, 8 - bits))), axis=1, bitorder="little")[:, 0]
    return (torch.from_numpy(u.astype(np.int16)) + lo).reshape(shape).to(dtype)


def save_quantized(model, directory, *, source: str | None = None, overwrite: bool = False) -> Path:
    """Write a quantized model (LoadedModel or nn.Module) to `directory` as a whole folder (see
    `sparsa.io.staged_folder`; an existing non-empty one only with `overwrite`, which replaces it).

    source: the float model to rebuild the architecture from on load (a sparsa model name or
    folder); default: the LoadedModel's recorded source."""
    out = Path(directory)
    loaded = model if hasattr(model, "adapter") else None
    module = loaded.model if loaded is not None else model
    qls = quant_layers(module)
    if not qls:
        raise SparsaError("the model has no quantized layers", hint="run sparsa.quant.quantize_ first")
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
        fmt = q.weight_format()
        if fmt == "bitmap":  # pruned weights: nonzero mask (1 bit per weight) + the nonzero codes, packed
            nz = q.qweight != 0
            tensors[f"{name}.qmask"] = torch.from_numpy(np.packbits(nz.reshape(-1).numpy(), bitorder="little"))
            tensors[f"{name}.qweight"] = pack_codes(q.qweight[nz], q.bits, q.scheme)
        else:
            tensors[f"{name}.qweight"] = pack_codes(q.qweight, q.bits, q.scheme)
        for b in ("w_scale", "w_zero_point", "bias", "a_scale", "a_zero_point", "smooth_inv"):
            t = getattr(q, b)
            if t is not None:
                tensors[f"{name}.{b}"] = t
        layers[name] = {"in": q.in_features, "out": q.out_features, "bits": q.bits, "scheme": q.scheme,
                        "per_channel": q.per_channel, "has_bias": q.bias is not None, "activations": q.activations,
                        "act_bits": q.act_bits, "act_scheme": q.act_scheme, "smooth": q.smooth_inv is not None,
                        "weight_format": fmt}
    if source is None and loaded is not None:
        source = loaded.record.get("source")
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

    base: the float architecture to fill (a LoadedModel or nn.Module with the same shapes); by
    default the `source` recorded at save time is loaded with `sparsa.models.load`.
    Returns the same kind of object as `base` (a LoadedModel by default).
    """
    d = Path(directory)
    jpath, wpath = d / "quant.json", d / "quant.safetensors"
    if not jpath.is_file() or not wpath.is_file():
        raise SparsaError(f"{d} is not a quantized-model folder (quant.json / quant.safetensors missing)",
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
        packed = tensors.pop(f"{name}.qweight")
        shape = (info["out"], info["in"])
        if info.get("weight_format", "dense") == "bitmap":
            nz = np.unpackbits(tensors.pop(f"{name}.qmask").numpy(), bitorder="little")[: math.prod(shape)].astype(bool)
            codes = torch.zeros(math.prod(shape), dtype=q.qweight.dtype)
            codes[torch.from_numpy(nz)] = unpack_codes(packed, q.bits, q.scheme, (int(nz.sum()),), q.qweight.dtype)
            q.qweight.copy_(codes.reshape(shape))
        else:
            q.qweight.copy_(unpack_codes(packed, q.bits, q.scheme, shape, q.qweight.dtype))
        for b in ("w_scale", "w_zero_point", "bias", "a_scale", "a_zero_point", "smooth_inv"):
            t = tensors.pop(f"{name}.{b}", None)
            if getattr(q, b) is not None:
                if t is None:
                    raise SparsaError(f"{wpath} lacks {name}.{b}", hint="the folder is corrupt; re-create it")
                getattr(q, b).copy_(t)
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
