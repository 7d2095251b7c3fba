"""`QuantConfig`: what `quantize_` does, as a dataclass that checks itself and round-trips to JSON.

Per-layer mixed precision: `overrides` maps fnmatch patterns on module names (e.g.
`"encoder.layer.0.output.dense"`, `"*.output.dense"`) to a dict of the per-layer fields below,
or to `None` to keep that layer in float. The first matching pattern wins.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
from dataclasses import dataclass, field

from sparsa.errors import SparsaError
from sparsa.quant.primitives import VALID_BITS, check_bits, check_clip, check_scheme

CONFIG_VERSION = 1
ACT_MODES = ("none", "dynamic", "static")
OBJECTIVES = ("weight", "output")
# the fields an override may set (everything that describes how one layer is quantized)
LAYER_FIELDS = ("bits", "scheme", "clip", "per_channel", "objective", "percentile",
                "activations", "act_bits", "act_scheme", "act_clip", "smooth")


@dataclass
class QuantConfig:
    """How to quantize every selected Linear layer.

    bits: weight bits 2..8, or "ternary" (ESCALATE codes {-1,0,+1} with one scale per channel).
    scheme: "sym" (no zero point, narrow range) or "asym" (zero point).
    clip: weight clipping, "max" | "percentile" | "search" (docs/algorithms.md §4 alpha grid).
    per_channel: one weight scale per output channel (else one per tensor).
    objective: what "search" minimises: the weight's own error ("weight") or the layer's output
        error on calibration inputs ("output"; needs calibration data).
    activations: "none" (weight-only: integer storage, float matmul), "dynamic" (per-tensor
        scale computed from each input at run time, like ONNX Runtime's dynamic quantization),
        "static" (per-tensor scale calibrated once; needs calibration data).
    act_bits / act_scheme / act_clip: activation bits, scheme (default: `scheme`), and static
        clipping (default: `clip`; dynamic activations always use their run-time max).
    smooth: None, or SmoothQuant's migration strength a in [0, 1]: the layer's input is divided
        per channel by s_j = max|x_j|^a / max|W_:,j|^(1-a) (calibrated) and the weight's columns
        multiplied by s_j, moving activation outliers into the per-channel weight scales. Costs one
        elementwise Mul at run time; use it on layers whose input no other layer reads (e.g. FFN).
    smooth_fold: BERT-family encoders: lay the smoothing out per `sparsa.quant.smooth` instead of
        per layer: Q, K, V share one s (one Mul, still one fused QAttention), and attention-out's
        smoothing is folded exactly into the V projection (no run-time op).
    overrides: {pattern: {field: value} | None}; None keeps matching layers in float.
    """

    bits: int | str = 8
    scheme: str = "sym"
    clip: str = "search"
    per_channel: bool = True
    objective: str = "weight"
    percentile: float = 99.99
    activations: str = "none"
    act_bits: int = 8
    act_scheme: str | None = None
    act_clip: str | None = None
    smooth: float | None = None
    smooth_fold: bool = False
    overrides: dict = field(default_factory=dict)
    version: int = CONFIG_VERSION

    def __post_init__(self):
        if self.version != CONFIG_VERSION:
            raise SparsaError(f"QuantConfig version {self.version} is not supported", hint=f"use version {CONFIG_VERSION}")
        _check_layer(self._layer_dict(), where="config")
        if not isinstance(self.smooth_fold, bool):
            raise SparsaError(f"smooth_fold must be true or false, got {self.smooth_fold!r}")
        if not isinstance(self.overrides, dict):
            raise SparsaError("overrides must be a dict {pattern: {field: value} or None}")
        for pat, ov in self.overrides.items():
            if ov is None:
                continue
            if not isinstance(ov, dict):
                raise SparsaError(f"override {pat!r} must be a dict of fields or None (keep float), got {ov!r}")
            bad = sorted(set(ov) - set(LAYER_FIELDS))
            if bad:
                raise SparsaError(f"override {pat!r} has unknown fields {bad}", hint=f"valid fields: {', '.join(LAYER_FIELDS)}")
            _check_layer({**self._layer_dict(), **ov}, where=f"override {pat!r}")

    def _layer_dict(self) -> dict:
        return {k: getattr(self, k) for k in LAYER_FIELDS}

    def for_layer(self, name: str) -> "LayerSpec | None":
        """The resolved settings of layer `name`, or None if it stays in float."""
        d = self._layer_dict()
        for pat, ov in self.overrides.items():
            if fnmatch.fnmatchcase(name, pat):
                if ov is None:
                    return None
                d.update(ov)
                break
        return LayerSpec(**d)

    def needs_calibration(self) -> bool:
        specs = [self._layer_dict()] + [{**self._layer_dict(), **ov} for ov in self.overrides.values() if ov]
        return any(s["activations"] == "static" or s["smooth"] is not None
                   or (s["clip"] == "search" and s["objective"] == "output") for s in specs)

    # JSON round trip ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> "QuantConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(d) - names)
        if bad:
            raise SparsaError(f"unknown QuantConfig fields {bad}", hint=f"valid fields: {', '.join(sorted(names))}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "QuantConfig":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise SparsaError(f"QuantConfig JSON is not valid: {e}") from e
        return cls.from_dict(d)


@dataclass(frozen=True)
class LayerSpec:
    """Resolved per-layer settings (act_scheme/act_clip filled in)."""

    bits: int | str
    scheme: str
    clip: str
    per_channel: bool
    objective: str
    percentile: float
    activations: str
    act_bits: int
    act_scheme: str | None
    act_clip: str | None
    smooth: float | None = None

    @property
    def a_scheme(self) -> str:
        return self.act_scheme or self.scheme

    @property
    def a_clip(self) -> str:
        return self.act_clip or self.clip


def _check_layer(d: dict, where: str) -> None:
    if d["bits"] != "ternary":
        check_bits(d["bits"])
    elif d["scheme"] != "sym":
        raise SparsaError(f"{where}: ternary weights are symmetric by construction", hint="use scheme='sym' with bits='ternary'")
    check_scheme(d["scheme"])
    check_clip(d["clip"])
    if d["activations"] not in ACT_MODES:
        raise SparsaError(f"{where}: activations={d['activations']!r} is not a mode", hint=f"use one of {', '.join(ACT_MODES)}")
    if d["objective"] not in OBJECTIVES:
        raise SparsaError(f"{where}: objective={d['objective']!r} is unknown", hint=f"use one of {', '.join(OBJECTIVES)}")
    if d["act_bits"] == "ternary":
        raise SparsaError(
            f"{where}: ternary activations are not supported (only weights can be ternary)",
            hint=f"use act_bits in {VALID_BITS[0]}..{VALID_BITS[-1]}",
        )
    check_bits(d["act_bits"])
    if d["act_scheme"] is not None:
        check_scheme(d["act_scheme"])
    if d["act_clip"] is not None:
        check_clip(d["act_clip"])
    if not isinstance(d["per_channel"], bool):
        raise SparsaError(f"{where}: per_channel must be true or false, got {d['per_channel']!r}")
    if d["smooth"] is not None and not (isinstance(d["smooth"], (int, float)) and 0.0 <= d["smooth"] <= 1.0):
        raise SparsaError(f"{where}: smooth={d['smooth']!r} must be None or a migration strength in [0, 1]", hint="e.g. 0.5")
    if not 0.0 < float(d["percentile"]) <= 100.0:
        raise SparsaError(f"{where}: percentile={d['percentile']} is out of range (0, 100]", hint="e.g. 99.99")
