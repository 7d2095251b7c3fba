"""RTL of the accelerator's core units in Amaranth HDL, checked bit for bit against the HDP golden model.

Units (see `unit_names()`): `pe`, `pe_array`, `sparsity_engine`, `softmax`, `ncore`.

    from sparsa.hw import rtl
    rtl.cosim("softmax", vectors=500).ok                 # Amaranth simulator vs sparsa.attention.hdp
    rtl.cosim("pe", 10_000, backend="verilator")          # through the generated Verilog
    rtl.export_verilog("pe_array", "array16", "out/")     # Verilog file
    rtl.synthesize("pe_array", "array32")["counts"]            # Yosys LUT/FF/DSP/BRAM
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sparsa.hw.rtl.cosim import BACKENDS, CosimResult, cosim, get_unit, unit_specs
from sparsa.hw.rtl.params import RtlParams, load_params, preset_names


def unit_names() -> list[str]:
    return list(unit_specs())


def build(unit: str, preset: str | None = None, **overrides: Any):
    """The Amaranth component of `unit` sized by `preset` (+ overrides)."""
    spec = get_unit(unit)
    return spec.build(load_params(preset or spec.default_preset, **overrides))


def verilog_text(unit: str, preset: str | None = None, **overrides: Any) -> str:
    from amaranth.back import verilog

    return verilog.convert(build(unit, preset, **overrides), name=f"sparsa_{unit}", emit_src=False)


def export_verilog(unit: str, preset: str | None, out_dir: str | Path, **overrides: Any) -> Path:
    """Write `sparsa_<unit>.v` into out_dir (atomically) and return its path."""
    from sparsa.io import atomic_write_text

    text = verilog_text(unit, preset, **overrides)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"sparsa_{unit}.v"
    atomic_write_text(path, text)
    return path


def synthesize(unit: str, preset: str | None = None, **kw: Any) -> dict:
    """Yosys resource counts of `unit` (see `sparsa.hw.rtl.synth.synth`)."""
    from sparsa.hw.rtl.synth import synth as _synth

    return _synth(unit, preset, **kw)


__all__ = [
    "BACKENDS",
    "CosimResult",
    "RtlParams",
    "build",
    "cosim",
    "export_verilog",
    "load_params",
    "preset_names",
    "synthesize",
    "unit_names",
    "verilog_text",
]
