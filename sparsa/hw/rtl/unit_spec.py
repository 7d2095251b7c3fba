"""What an RTL unit registers for co-simulation: its builder, its vector generator, and a trace batch.

Kept apart from `cosim` so that `units` (the registry of units) and `cosim` (the runner) do not
import each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from sparsa.hw.rtl.params import RtlParams


@dataclass
class Batch:
    """A trace and what must come out of it."""

    trace: list[dict[str, int]]
    expect: dict[int, dict[str, int]]  # cycle -> output port -> value
    vectors: int
    kinds: dict[str, int] = field(default_factory=dict)  # vector kind -> count


@dataclass(frozen=True)
class UnitSpec:
    name: str
    description: str
    build: Callable[..., Any]  # (params, **mutation) -> Component
    make_batch: Callable[[RtlParams, torch.Generator, int], Batch]
    strobe: str | None
    default_overrides: dict = field(default_factory=dict)  # sizes that keep a cosim quick
    default_preset: str | None = None
