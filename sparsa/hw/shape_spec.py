"""Shape workloads for `sparsa sim`: a built-in name or a YAML/JSON file of `from_shapes` fields.

    num_layers: 12       # uniform layers ...
    hidden: 768
    heads: 12
    head_dim: 64         # default hidden // heads
    ffn: 3072
    seq_len: 128         # optional; --seq-len overrides
    batch: 1             # optional; --batch overrides
or `layers: [{hidden, heads, head_dim, ffn}, ...]` for per-layer (pruned) shapes. Unknown keys,
non-integers and sizes past the bounds below are refused naming the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sparsa.errors import SparsaError
from sparsa.hw.workload import LayerShape, Workload, from_shapes
from sparsa.safe_yaml import load_yaml_text

BUILTIN = {
    "bert-base": dict(num_layers=12, hidden=768, heads=12, ffn=3072),
    "bert-tiny": dict(num_layers=2, hidden=128, heads=2, ffn=512),
    "minilm-shapes": dict(num_layers=6, hidden=384, heads=12, ffn=1536),
}
# bounds: far past real transformers, small enough that every count stays a 64-bit integer
MAX_LAYERS = 4096
MAX_DIM = 2**24
MAX_HEADS = 2**16
MAX_FILE_BYTES = 1 << 20


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class LayerSpec(_Spec):
    hidden: int = Field(ge=1, le=MAX_DIM)
    heads: int = Field(ge=0, le=MAX_HEADS)  # 0: every head pruned
    head_dim: int = Field(ge=1, le=MAX_DIM)
    ffn: int = Field(ge=0, le=MAX_DIM)  # 0: the FFN pruned away


class ShapeSpec(_Spec):
    kind: str | None = None  # a label ("shapes"), not used
    num_layers: int = Field(12, ge=1, le=MAX_LAYERS)
    hidden: int = Field(768, ge=1, le=MAX_DIM)
    heads: int = Field(12, ge=1, le=MAX_HEADS)
    head_dim: int | None = Field(None, ge=1, le=MAX_DIM)
    ffn: int = Field(3072, ge=0, le=MAX_DIM)
    seq_len: int = Field(128, ge=1, le=MAX_DIM)
    batch: int = Field(1, ge=1, le=MAX_HEADS)
    layers: list[LayerSpec] | None = Field(None, min_length=1, max_length=MAX_LAYERS)

    @model_validator(mode="after")
    def _head_dim(self) -> "ShapeSpec":
        if self.layers is None and self.head_dim is None and self.hidden // self.heads < 1:
            raise ValueError(f"hidden={self.hidden} is smaller than heads={self.heads}: give head_dim")
        return self


ALLOWED_KEYS = tuple(ShapeSpec.model_fields)


def _error(e: ValidationError, origin: str) -> SparsaError:
    lines = []
    for err in e.errors()[:6]:
        loc = ".".join(str(x)[:40] for x in err["loc"]) or "(file)"
        if err["type"] == "extra_forbidden":
            allowed = ALLOWED_KEYS if len(err["loc"]) == 1 else tuple(LayerSpec.model_fields)
            lines.append(f"unknown key {loc!r} (allowed: {', '.join(allowed)})")
        elif err["loc"][:1] == ("layers",) and err["type"] in ("list_type", "model_type"):
            lines.append(f"{loc}: layers must be a list of mappings of {', '.join(LayerSpec.model_fields)}")
        else:
            lines.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
    return SparsaError(f"{origin}: " + "; ".join(lines),
                       hint="e.g. {num_layers: 12, hidden: 768, heads: 12, ffn: 3072} or "
                            "layers: [{hidden: 768, heads: 12, head_dim: 64, ffn: 3072}, ...]")


def parse_shape_spec(data: Any, origin: str) -> ShapeSpec:
    """Validate the fields of a shape workload (a mapping) or raise a `SparsaError` naming the field."""
    if not isinstance(data, dict):
        raise SparsaError(f"{origin}: expected a mapping of shape fields, got {type(data).__name__}",
                          hint="e.g. {num_layers: 12, hidden: 768, heads: 12, ffn: 3072}")
    try:
        return ShapeSpec.model_validate(data)
    except ValidationError as e:
        raise _error(e, origin) from None


def read_shape_spec(spec: str) -> ShapeSpec:
    """A built-in shape name or a YAML/JSON shape file, validated."""
    if spec in BUILTIN:
        return ShapeSpec(**BUILTIN[spec])
    path = Path(spec)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise SparsaError(f"{spec}: {path.stat().st_size:,} bytes is past the {MAX_FILE_BYTES:,} a shape file may have",
                              hint="describe the layers with num_layers/hidden/heads/ffn, or fewer per-layer entries")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SparsaError(f"{spec}: cannot read the shape file ({e.__class__.__name__})",
                          hint="give a readable UTF-8 YAML or JSON file") from None
    return parse_shape_spec(load_yaml_text(text, spec), spec)


def shape_workload(s: ShapeSpec, name: str, *, seq_len: int | None = None, batch: int | None = None) -> Workload:
    """The workload of a validated shape spec; `seq_len` / `batch` (the CLI's options) override the file's."""
    layers = None if s.layers is None else [LayerShape(l.hidden, l.heads, l.head_dim, l.ffn) for l in s.layers]
    return from_shapes(layers, num_layers=s.num_layers, hidden=s.hidden, heads=s.heads, head_dim=s.head_dim,
                       ffn=s.ffn, seq_len=seq_len or s.seq_len, batch=batch or s.batch, name=name)
