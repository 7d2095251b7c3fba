"""Parameters of the RTL units, and where they come from (architecture presets or explicit values).

The RTL takes its sizes from the simulator's architecture presets (`sparsa.hw.arch.load_arch`) when
that module and the preset exist; the few presets the RTL needs on its own (the seed-000 lane block,
the array sizes of the resource bench) are built in here, so the RTL builds without the simulator.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from sparsa.errors import SparsaError

SPLITS = ("floor", "trunc")


@dataclass(frozen=True)
class RtlParams:
    """Everything an RTL unit is sized by. Defaults = docs/algorithms.md §5.1, §5.5 CHOICEs (Q3.4, 2x2 blocks, 2x4 PEs)."""

    total_bits: int = 8  # n_b of the Qm.f operand codes (docs/algorithms.md §1.1)
    frac_bits: int = 4  # f
    head_dim: int = 64  # D_h: the longest dot product a PE accumulates
    split: str = "floor"  # integer/fractional split of a code (docs/algorithms.md §1.2)
    block: int = 2  # block size b (a PE holds one b x b output block)
    pe_rows: int = 2  # PEs per array column
    pe_cols: int = 4  # PEs per array row
    max_blocks: int = 64  # blocks per block-row the sparsity engine buffers (seq_len / b)
    rho_bits: int = 10  # signed rho_q in [-256, 256]
    cores: int = 1  # N of the parallel wrapper
    lane_kind: str = "pe"  # what one lane of the wrapper is: "pe" (an HDP PE) or "seed" (seed 000's lane)
    lane_in_bits: int = 8  # parallel wrapper: input word of one lane (seed 000: 8)
    lane_out_bits: int = 16  # parallel wrapper: result word of one lane (seed 000: 16)
    lane_addend: int = 10  # seed 000's placeholder operation: result = input + 10
    # softmax unit: the golden model's fixed-point formats (HDPConfig defaults) and the score word
    score_bits: int = 12  # S: fractional bits of the scaled score x
    exp_bits: int = 15  # E
    recip_bits: int = 15  # M
    prob_bits: int = 15  # fractional bits of P
    newton_steps: int = 0
    x_bits: int = 24  # signed width of the score word x the softmax unit takes

    # -- derived widths ---------------------------------------------------------------------
    @property
    def int_bits(self) -> int:
        """Width of the signed integer part I = q >> f (1 + m bits)."""
        return self.total_bits - self.frac_bits

    @property
    def acc_bits(self) -> int:
        """docs/algorithms.md §1.1: 2*n_b + ceil(log2 D_h) bits never overflow for a length-D_h dot product."""
        return 2 * self.total_bits + max(1, math.ceil(math.log2(self.head_dim)))

    @property
    def importance_bits(self) -> int:
        """Sum of |acc| over the b*b accumulators of one PE (unsigned)."""
        return self.acc_bits + math.ceil(math.log2(self.block * self.block))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> "RtlParams":
        if not 2 <= self.total_bits <= 16:
            raise SparsaError(
                f"total_bits={self.total_bits}: the RTL units hold operand codes of 2..16 bits",
                hint="use an 8-bit format such as Q3.4 (total_bits=8, frac_bits=4)",
            )
        if not 0 <= self.frac_bits < self.total_bits:
            raise SparsaError(
                f"frac_bits={self.frac_bits} does not fit a {self.total_bits}-bit code (need 0 <= f < n_b)",
                hint="the sign bit and at least zero integer bits must remain: f <= n_b - 1",
            )
        if self.split not in SPLITS:
            raise SparsaError(f"split={self.split!r} is unknown", hint=f"choose one of {', '.join(SPLITS)}")
        if self.head_dim < 1 or self.head_dim > 4096:
            raise SparsaError(f"head_dim={self.head_dim} is out of range", hint="give D_h in 1..4096")
        if self.block != 2:
            raise SparsaError(
                f"block={self.block}: the PE and sparsity engine are built for 2x2 blocks (docs/algorithms.md §5.5 CHOICE)",
                hint="use block=2",
            )
        for name in ("pe_rows", "pe_cols", "cores"):
            if not 1 <= getattr(self, name) <= 64:
                raise SparsaError(f"{name}={getattr(self, name)} is out of range", hint=f"give {name} in 1..64")
        if not 1 <= self.max_blocks <= 4096:
            raise SparsaError(f"max_blocks={self.max_blocks} is out of range", hint="give 1..4096 blocks per row")
        if self.rho_bits < 10:
            raise SparsaError(f"rho_bits={self.rho_bits} cannot hold rho_q in [-256, 256]", hint="use rho_bits >= 10")
        if not 1 <= self.lane_in_bits <= self.lane_out_bits <= 64:
            raise SparsaError(
                f"lane widths in={self.lane_in_bits}, out={self.lane_out_bits}: need 1 <= in <= out <= 64",
                hint="seed 000 uses 8-bit inputs and 16-bit results",
            )
        if not 0 <= self.lane_addend < 2**self.lane_out_bits:
            raise SparsaError(
                f"lane_addend={self.lane_addend} does not fit {self.lane_out_bits} bits",
                hint="choose an addend below 2**lane_out_bits",
            )
        if self.lane_kind not in ("pe", "seed"):
            raise SparsaError(f"lane_kind={self.lane_kind!r} is unknown", hint="choose pe or seed")
        if self.newton_steps not in (0, 1, 2):
            raise SparsaError(f"newton_steps={self.newton_steps} must be 0, 1 or 2")
        if not 8 <= self.x_bits <= 40:
            raise SparsaError(f"x_bits={self.x_bits}: the softmax unit takes 8..40-bit scores", hint="default 24")
        return self

    def hdp_config(self, **kw):
        """The golden model's HDPConfig with this unit's formats."""
        from sparsa.attention.hdp import HDPConfig

        return HDPConfig(
            frac_bits=self.frac_bits, total_bits=self.total_bits, block=self.block, split=self.split,
            score_bits=self.score_bits, exp_bits=self.exp_bits, recip_bits=self.recip_bits,
            prob_bits=self.prob_bits, newton_steps=self.newton_steps, **kw,
        )


# Built-in presets. `hdp-edge`/`hdp-server` are the docs/algorithms.md §5.5 placeholder sizes (not paper figures).
BUILTIN_PRESETS: dict[str, dict[str, Any]] = {
    "hdp-edge": dict(cores=1, pe_rows=2, pe_cols=4),
    "hdp-server": dict(cores=8, pe_rows=2, pe_cols=4),
    "seed000": dict(cores=4, lane_kind="seed", lane_in_bits=8, lane_out_bits=16, lane_addend=10),
    "array8": dict(pe_rows=4, pe_cols=4),  # 8x8 output tile (4x4 PEs of 2x2 blocks)
    "array16": dict(pe_rows=8, pe_cols=8),  # 16x16 output tile
    "array32": dict(pe_rows=16, pe_cols=16),  # 32x32 output tile
}


def _from_arch(preset: str) -> dict[str, Any] | None:
    """Sizes from the simulator's preset (`sparsa.hw.arch`), if that module exists and knows `preset`.

    The array's MAC grid rows x cols becomes (rows/2) x (cols/2) PEs (one 2x2 block per PE) unless the
    preset names pe_rows/pe_cols; operand_bits becomes n_b; cores is taken as is."""
    try:
        from sparsa.hw.arch import list_presets, load_arch  # owned by the simulator helper
    except ImportError:
        return None
    if preset not in list_presets() and not preset.endswith((".yaml", ".yml")):
        return None
    arch = load_arch(preset)
    out: dict[str, Any] = {"cores": int(arch.cores)}
    arr = arch.array
    out["pe_rows"] = int(arr.pe_rows or max(1, arr.rows // 2))
    out["pe_cols"] = int(arr.pe_cols or max(1, arr.cols // 2))
    out["total_bits"] = int(arch.bits.operand_bits)
    if out["total_bits"] <= 4:  # keep at least the sign bit and one integer bit
        out["frac_bits"] = max(0, out["total_bits"] - 2)
    se = getattr(arch, "sparsity_engine", None)
    if se is not None and getattr(se, "block", None):
        out["block"] = int(se.block)
    return out


def preset_names() -> list[str]:
    names = set(BUILTIN_PRESETS)
    try:
        from sparsa.hw.arch import list_presets  # type: ignore[attr-defined]

        names.update(list_presets())
    except Exception:  # noqa: BLE001 - the simulator module is optional for the RTL
        pass
    return sorted(names)


def load_params(preset: str | None = None, **overrides: Any) -> RtlParams:
    """RtlParams from a preset name (built-in or the simulator's) plus explicit overrides."""
    base: dict[str, Any] = {}
    if preset is not None:
        # the simulator's preset wins where both exist (hdp-edge/hdp-server): one source of sizes
        from_arch = _from_arch(preset)
        if from_arch is not None:
            base.update(from_arch)
        elif preset in BUILTIN_PRESETS:
            base.update(BUILTIN_PRESETS[preset])
        else:
            raise SparsaError(f"unknown preset {preset!r}", hint=f"choose one of {', '.join(preset_names())}")
    known = {f.name for f in fields(RtlParams)}
    for k, v in overrides.items():
        if k not in known:
            raise SparsaError(f"unknown RTL parameter {k!r}", hint=f"known parameters: {', '.join(sorted(known))}")
        if v is not None:
            base[k] = v
    return replace(RtlParams(), **base).validate()
