"""Accelerator architecture as validated data, loaded from YAML presets.

`load_arch("hdp-edge")` reads `sparsa/hw/presets/hdp-edge.yaml`; `load_arch("my.yaml")` reads a
file; `load_arch(dict)` validates a dict. Every field is checked by pydantic; a bad field raises
`SparsaError` naming it, and impossible machines (a buffer that cannot hold one double-buffered
tile edge, a zero bandwidth) are rejected with the reason.

Units: sizes in bytes (buffers in KiB), bandwidths in bytes per cycle, energies in pJ, areas in
mm^2 (or FPGA resources for FPGA presets), clock in Hz.
"""

from __future__ import annotations

import json
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sparsa.errors import SparsaError
from sparsa.safe_yaml import load_yaml_file

PRESET_DIR = Path(__file__).parent / "presets"
# written by the RTL helper's synthesis (`sparsa rtl synth`); read if present, never required
RTL_AREA_FILE = Path(__file__).parent / "rtl" / "synth_results.json"


# upper bounds that keep every derived count (cycles, bytes, pJ) a finite number far from overflow
MAX_RATE = 1e12  # clock in Hz, bandwidth in bytes/cycle, energy in pJ per event, power in W, area per unit
MAX_COUNT = 10**9  # elements per cycle, cycles per step, latencies
MAX_KB = float(2**30)  # 1 TiB per scratchpad


class _Strict(BaseModel):
    # NaN and +-inf are refused in every float field (`clock_hz: .inf` would give a latency of 0)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ArrayCfg(_Strict):
    """The MAC array of one core. rows x cols MACs; OS: one output per MAC."""

    rows: int = Field(gt=0, le=4096)
    cols: int = Field(gt=0, le=4096)
    dataflow: Literal["os", "ws", "is"] = "os"
    # HDP-style PEs: a PE holds a block x block output block (docs/algorithms.md §5.5); pe grid = rows/block x cols/block
    pe_rows: int | None = Field(default=None, gt=0, le=4096)
    pe_cols: int | None = Field(default=None, gt=0, le=4096)


class BitsCfg(_Strict):
    operand_bits: int = Field(default=8, ge=1, le=32)  # weights and activations on the array
    accumulator_bits: int = Field(default=32, ge=8, le=64)
    output_bits: int = Field(default=8, ge=1, le=32)  # what is written back to SRAM/DRAM
    # a MAC's multiplier splits into (operand_bits // b)^2 narrower b-bit products per cycle
    # (HDP's 4-bit integer and fractional parts on 8-bit PEs: 4 products per PE per cycle)
    split_multipliers: bool = False


class BufferCfg(_Strict):
    """Per-core double-buffered scratchpads (SCALE-Sim's ifmap / filter / ofmap SRAMs)."""

    ifmap_kb: float = Field(gt=0, le=MAX_KB)
    filter_kb: float = Field(gt=0, le=MAX_KB)
    ofmap_kb: float = Field(gt=0, le=MAX_KB)
    active_fraction: float = Field(default=0.5, ge=0.5, lt=1.0)  # SCALE-Sim: half serves, half prefetches


class DramCfg(_Strict):
    # None = unlimited (SCALE-Sim's CALC mode: never stalls on reads)
    bandwidth_bytes_per_cycle: float | None = Field(default=None, le=MAX_RATE)
    # "tiles": each fold's operand slices are double-buffered, a slice is re-fetched only when the
    #   fold needs a different one and the operand does not fit on chip; the loop order with less
    #   traffic is chosen (what a tiled accelerator's scheduler does).
    # "scalesim": SCALE-Sim v3's read buffers (a window of sets sliding by half the SRAM, wrapping
    #   around the stream); reproduces its stall cycles, used to validate against it.
    memory_model: Literal["tiles", "scalesim"] = "tiles"
    # False: one channel carries ifmap, filter and ofmap traffic (their times add up);
    # True: SCALE-Sim's USER mode, each of the three interfaces has the full bandwidth
    per_interface: bool = False


class SparsityEngineCfg(_Strict):
    """HDP's sparsity engine (docs/algorithms.md §5.5): block importance, row threshold, head skip, fetch-upon-mask."""

    present: bool = False
    block: int = Field(default=2, gt=0, le=4096)
    # "tile": a whole array tile is skipped when all its blocks are pruned (plain systolic array);
    # "block": fetch-upon-mask packs the kept blocks of a block-row stripe into full tiles
    skip: Literal["tile", "block"] = "tile"
    cycles_per_block_row: int = Field(default=1, ge=0, le=MAX_COUNT)  # END_R: threshold + mask of one block-row
    cycles_per_head: int = Field(default=2, ge=0, le=MAX_COUNT)  # END_H: compare theta_H with tau_H
    overlapped: bool = True  # SE work hidden under the next GEMM tile (only its tail shows)


class ExploitsCfg(_Strict):
    """What the machine makes of a layer's weight annotation (sparsa.models.hw_annotation). Narrow
    operand lanes are `bits.split_multipliers`; attention block skipping is `sparsity_engine.present`."""

    # zero weights are skipped: a GEMM's inner dimension shrinks to its non-zeros, times
    # (1 + zero_skip_overhead) for the lanes' load imbalance (the fullest lane sets a tile's pace)
    weight_zero_skipping: bool = False
    zero_skip_overhead: float = Field(default=0.1, ge=0, le=10)
    # only non-zero weights are stored and fetched, plus their index: "bitmap" (1 bit per weight)
    # or "csr" (one `index_bits` column index per non-zero); a matrix dense enough that the index
    # costs more than the zeros is fetched dense
    compressed_weight_storage: bool = False
    index_format: Literal["bitmap", "csr"] = "bitmap"
    index_bits: int = Field(default=16, ge=1, le=64)


class SoftmaxUnitCfg(_Strict):
    present: bool = False
    elems_per_cycle: int = Field(default=8, gt=0, le=MAX_COUNT)
    row_latency: int = Field(default=4, ge=0, le=MAX_COUNT)  # reciprocal at row end (docs/algorithms.md §5.1 step 10)


class VectorUnitCfg(_Strict):
    """Elementwise work (GELU, residual add, layernorm) and softmax when there is no softmax unit."""

    elems_per_cycle: int = Field(default=16, gt=0, le=MAX_COUNT)


class EnergyCfg(_Strict):
    """Energy per counted event in pJ; total energy = sum(count * energy) exactly."""

    mac: float = Field(default=0.2, ge=0, le=MAX_RATE)  # one operand_bits x operand_bits MAC
    sram_read_byte: float = Field(default=1.0, ge=0, le=MAX_RATE)
    sram_write_byte: float = Field(default=1.2, ge=0, le=MAX_RATE)
    dram_byte: float = Field(default=40.0, ge=0, le=MAX_RATE)
    softmax_elem: float = Field(default=1.5, ge=0, le=MAX_RATE)
    vector_elem: float = Field(default=0.5, ge=0, le=MAX_RATE)
    se_block: float = Field(default=0.3, ge=0, le=MAX_RATE)  # sparsity engine: one block importance/threshold step
    source: str = "placeholder"


class AreaCfg(_Strict):
    """Area per unit (mm^2) or FPGA resources; `source` says where the numbers come from."""

    pe_mm2: float = Field(default=0.0004, ge=0, le=MAX_RATE)  # one MAC with its registers
    sram_mm2_per_kb: float = Field(default=0.002, ge=0, le=MAX_RATE)
    sparsity_engine_mm2: float = Field(default=0.0, ge=0, le=MAX_RATE)
    softmax_unit_mm2: float = Field(default=0.0, ge=0, le=MAX_RATE)
    vector_unit_mm2: float = Field(default=0.01, ge=0, le=MAX_RATE)
    fpga: dict[str, Annotated[float, Field(ge=0, le=MAX_RATE)]] | None = None  # e.g. seed 001's BRAM/DSP/LUT/FF/URAM
    source: str = "placeholder"
    rtl: dict[str, Any] | None = None  # per-unit synthesis numbers from sparsa/hw/rtl, when present


class Arch(_Strict):
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    placeholder: bool = False  # True: sizes are sparsa CHOICEs, not figures from a paper
    reference: str = ""  # where the numbers come from
    clock_hz: float = Field(gt=0, le=MAX_RATE)
    cores: int = Field(default=1, gt=0, le=1024)
    array: ArrayCfg
    bits: BitsCfg = BitsCfg()
    buffers: BufferCfg
    dram: DramCfg = DramCfg()
    sparsity_engine: SparsityEngineCfg = SparsityEngineCfg()
    exploits: ExploitsCfg = ExploitsCfg()
    softmax_unit: SoftmaxUnitCfg = SoftmaxUnitCfg()
    vector_unit: VectorUnitCfg = VectorUnitCfg()
    energy_pj: EnergyCfg = EnergyCfg()
    area: AreaCfg = AreaCfg()
    power_w: float | None = Field(default=None, gt=0, le=MAX_RATE)  # reported board power (seed 001), if any

    @model_validator(mode="after")
    def _feasible(self) -> "Arch":
        bw = self.dram.bandwidth_bytes_per_cycle
        if bw is not None and bw <= 0:
            raise ValueError(
                f"dram.bandwidth_bytes_per_cycle={bw}: a machine with zero DRAM bandwidth can never load its operands"
                " (omit the field for unlimited bandwidth)"
            )
        w = self.word_bytes
        a, b = self.array, self.buffers
        # one double-buffered tile edge: the array consumes `rows` ifmap and `cols` filter words per cycle
        need = {
            "ifmap_kb": 2 * a.rows * w,
            "filter_kb": 2 * a.cols * w,
            "ofmap_kb": 2 * a.cols * w,
        }
        for field, nbytes in need.items():
            have = getattr(b, field) * 1024
            if have < nbytes:
                raise ValueError(
                    f"buffers.{field}={getattr(b, field)} KiB is smaller than one double-buffered tile edge of the "
                    f"{a.rows}x{a.cols} array ({nbytes} bytes)"
                )
        if self.sparsity_engine.present and self.sparsity_engine.skip == "block":
            blk = self.sparsity_engine.block
            if a.rows % blk or a.cols % blk:
                raise ValueError(
                    f"array {a.rows}x{a.cols} is not a whole number of {blk}x{blk} blocks"
                    " (sparsity_engine.skip='block' maps one block per PE)"
                )
        return self

    # ---- derived -------------------------------------------------------------------------------
    @property
    def word_bytes(self) -> float:
        return self.bits.operand_bits / 8

    @property
    def macs(self) -> int:
        return self.array.rows * self.array.cols * self.cores

    def exploit_summary(self) -> dict[str, bool]:
        """Which compression the machine turns into fewer cycles or bytes (and from which field)."""
        return {"weight_zero_skipping": self.exploits.weight_zero_skipping,
                "compressed_weight_storage": self.exploits.compressed_weight_storage,
                "narrow_operand_lanes": self.bits.split_multipliers,
                "attention_block_skipping": self.sparsity_engine.present}

    def total_area(self) -> dict[str, float]:
        """Area per unit and in total (all cores)."""
        a = self.area
        per_core = {
            "pe_array": a.pe_mm2 * self.array.rows * self.array.cols,
            "sram": a.sram_mm2_per_kb * (self.buffers.ifmap_kb + self.buffers.filter_kb + self.buffers.ofmap_kb),
            "sparsity_engine": a.sparsity_engine_mm2 if self.sparsity_engine.present else 0.0,
            "softmax_unit": a.softmax_unit_mm2 if self.softmax_unit.present else 0.0,
            "vector_unit": a.vector_unit_mm2,
        }
        out = {k: v * self.cores for k, v in per_core.items()}
        out["total"] = sum(out.values())
        return out


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


_SHORT = reprlib.Repr()  # a bad input is quoted short, however big it is
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = 4
_SHORT.maxlevel = 2
MAX_LISTED_ERRORS = 8


def _format_validation_error(e: ValidationError, origin: str) -> SparsaError:
    lines = []
    errors = e.errors()
    for err in errors[:MAX_LISTED_ERRORS]:
        loc = ".".join(str(x)[:60] for x in err["loc"]) or "(architecture)"
        msg = err["msg"].removeprefix("Value error, ")
        shown = err["type"] != "value_error" and "input" in err and not isinstance(err["input"], dict)
        lines.append(f"{loc}: {msg}" + (f" (got {_SHORT.repr(err['input'])})" if shown else ""))
    if len(errors) > MAX_LISTED_ERRORS:
        lines.append(f"... and {len(errors) - MAX_LISTED_ERRORS} more")
    return SparsaError(
        f"invalid architecture {origin}: " + "; ".join(lines),
        hint="fix the named field(s); see docs/simulator.md for every field and its unit",
    )


def _rtl_area() -> dict[str, Any] | None:
    """Per-unit synthesis figures written by the RTL helper, if that file exists (optional)."""
    if not RTL_AREA_FILE.exists():
        return None
    try:
        return json.loads(RTL_AREA_FILE.read_text())
    except (OSError, ValueError):
        return None


def _find_file(s: str) -> Path | None:
    """The preset named `s`, else the file at path `s`, else None."""
    for path in (PRESET_DIR / f"{s}.yaml", Path(s)):
        try:
            if path.is_file():
                return path
        except (OSError, ValueError):  # a name too long for the filesystem, a NUL byte
            continue
    return None


def load_arch(spec: "str | Path | dict[str, Any] | Arch", **overrides: Any) -> Arch:
    """An `Arch` from a preset name, a YAML file path, a dict, or an `Arch`.

    `overrides` are dotted field paths, e.g. `load_arch("systolic-32-os", **{"dram.bandwidth_bytes_per_cycle": 4})`.
    """
    if isinstance(spec, Arch):
        data = spec.model_dump()
        origin = repr(spec.name)
    elif isinstance(spec, dict):
        data, origin = dict(spec), "(dict)"
    else:
        s = str(spec)
        path = _find_file(s)
        if path is None:
            raise SparsaError(
                f"no architecture preset or YAML file {_SHORT.repr(s)}",
                hint=f"use one of the presets {', '.join(list_presets())} or a path to a .yaml file",
            )
        data = load_yaml_file(path, "architecture file")
        if not isinstance(data, dict):
            raise SparsaError(f"{path}: expected a mapping of architecture fields", hint="see sparsa/hw/presets/*.yaml")
        origin = repr(str(path))
    for key, value in overrides.items():
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise SparsaError(f"override {key!r}: {p!r} is not a section", hint="use section.field")
        node[parts[-1]] = value
    rtl = _rtl_area()
    if rtl is not None and isinstance(data.get("area", {}), dict) and "rtl" not in data.get("area", {}):
        data.setdefault("area", {})
        data["area"] = {**data["area"], "rtl": rtl}
    try:
        return Arch.model_validate(data)
    except ValidationError as e:
        raise _format_validation_error(e, origin) from None
