"""The quantize stage's verb on a LoadedModel: options → QuantConfig, smoothing trimmed, record.

Kept apart from `api` (the layer-level verb) because it also uses `sensitivity`, which builds on `api`.
"""

from __future__ import annotations

from sparsa.errors import SparsaError
from sparsa.quant.api import half_float_storage_, quantize_
from sparsa.quant.config import QuantConfig


def quantize_loaded(loaded, *, mode: str = "standard", bits: int | str = 8, scheme: str = "sym", clip: str = "search",
                    per_channel: bool = True, activations: bool | str = "none", calib=None, calib_samples: int = 32,
                    smooth: float | None = None, smooth_ffn_out: float | None = None,
                    smooth_budget: float | None = None, float_storage: str = "float32", objective: str = "weight",
                    keep_float: list[str] | tuple[str, ...] = (), seq_len: int | None = None, progress=None, **extra):
    """The quantize verb of `sparsa quantize` and the recipe's quantize stage: returns (loaded, record).

    bits: 2..8, "ternary", or "auto" (8 on a CPU with VNNI, else 7: `sparsa.quant.kernels.auto_weight_bits`;
    the record's "bits_choice" says which and why). activations: "none" | "dynamic" | "static" (True / False:
    static / none). smooth / smooth_ffn_out:
    SmoothQuant laid out by `sparsa.quant.smooth.smoothing_fields`; smooth_budget: keep only the
    smoothing Muls that pay (`trim_smoothing_on` the calibration sentences); float_storage "float16":
    `half_float_storage_`. objective: the clipping search minimises the "weight" or the layer "output"
    error. keep_float: module-name patterns left in float."""
    if mode != "standard":  # hybrid (ESCALATE) quantization is sparsa.decompose.escalate.hybridize
        raise SparsaError(f"quantize mode {mode!r} is not handled here",
                          hint="use 'standard'; hybrid quantization is sparsa.decompose.escalate.hybridize")
    from sparsa.quant.smooth import smoothing_fields

    if float_storage not in ("float32", "float16"):
        raise SparsaError(f"float_storage {float_storage!r} is not a storage type", hint="use float32 or float16")
    act = ("static" if activations else "none") if isinstance(activations, bool) else activations
    bits_choice = None
    if bits == "auto":  # the widest symmetric codes ORT's fast u8×s8 kernels multiply exactly on this CPU
        from sparsa.quant.kernels import auto_weight_bits, this_cpu_isa

        isa = this_cpu_isa()
        bits, why = auto_weight_bits(isa)
        bits_choice = {"bits": bits, "why": why, "cpu_isa": isa}
    sm = smoothing_fields(loaded, smooth, smooth_ffn_out)
    overrides = sm.pop("overrides", {}) | {p: None for p in keep_float}
    cfg = QuantConfig(bits=bits, scheme=scheme, clip=clip, per_channel=per_channel, activations=act,
                      act_scheme="asym" if act == "dynamic" else None, objective=objective, overrides=overrides,
                      **sm, **extra)
    trim = None
    if smooth_budget is not None:
        from sparsa.quant.sensitivity import trim_smoothing_on, trim_summary

        cfg, trim = trim_smoothing_on(loaded, cfg, getattr(calib, "texts", calib), calib_samples, smooth_budget,
                                      progress=progress)
    quantize_(loaded, cfg, calib=calib, calib_samples=calib_samples, seq_len=seq_len)
    if float_storage == "float16":
        half_float_storage_(loaded)
    record = loaded.record["stages"][-1]
    if trim is not None:
        record["smooth_trim"] = trim_summary(trim)
    if bits_choice is not None:
        record["bits_choice"] = bits_choice
    return loaded, record
