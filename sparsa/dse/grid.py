"""Sweep grids: which recipe/hardware parameters to vary, how to search them, what to optimise.

    mode: grid                      # grid (cross product) | random | optuna
    params:                         # dotted paths into the recipe (see sparsa.recipe.apply_overrides)
      stages.prune.heads: [0.25, 0.5]
      hardware.params.cores: [1, 2, 4]
      stages.attention.rho_b: {low: -0.5, high: 0.5}      # a range (random / optuna only)
    samples: 16                     # random / optuna: number of points
    seed: 0
    objectives:                     # metrics of the run results (dotted), for the Pareto front
      - {metric: final.quality.cosine_mean, goal: max}
      - {metric: hardware.compressed.latency_s, goal: min}
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sparsa.errors import SparsaError
from sparsa.safe_yaml import compose_and_load, read_yaml_text


class Range(BaseModel):
    model_config = ConfigDict(extra="forbid")
    low: float
    high: float
    log: bool = False
    int: bool = False

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low < self.high:
            raise ValueError(f"range needs low < high, got low={self.low} high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class Objective(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metric: str
    goal: Literal["min", "max"]


class Grid(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["grid", "random", "optuna"] = "grid"
    params: dict[str, Union[list[Any], Range]]
    samples: int | None = Field(None, ge=1, le=1_000_000)
    seed: int = 0
    objectives: list[Objective] = Field(default_factory=list)

    @model_validator(mode="after")
    def _coherent(self):
        if not self.params:
            raise ValueError("params is empty: name at least one dotted recipe path with its values")
        for path, vals in self.params.items():
            if isinstance(vals, list) and not vals:
                raise ValueError(f"params.{path} has no values: the grid would expand to nothing")
            if isinstance(vals, Range) and self.mode == "grid":
                raise ValueError(f"params.{path} is a range: use a list of values for mode 'grid', or mode random/optuna")
        if self.mode != "grid" and self.samples is None:
            raise ValueError(f"mode {self.mode!r} needs samples: the number of points to draw")
        if self.mode == "optuna" and not self.objectives:
            raise ValueError("mode 'optuna' needs objectives to optimise")
        return self


def load_grid(path: str | Path) -> Grid:
    p = Path(path)
    if not p.exists():
        raise SparsaError(f"grid file {p} not found", hint="see docs/pipeline.md for the grid format")
    raw, node = compose_and_load(read_yaml_text(p, "grid file"), str(p))
    if not isinstance(raw, dict):
        raise SparsaError(f"{p}: a grid must be a mapping with params: (and mode:, objectives:)",
                          hint="e.g. params: {stages.prune.heads: [0.25, 0.5]}; see docs/pipeline.md for the grid format")
    try:
        return Grid.model_validate(raw)
    except ValidationError as e:
        from sparsa.recipe import _line_of, _loc_str

        msgs = []
        for err in e.errors():
            loc = tuple(err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            line = _line_of(node, loc)
            msgs.append(f"{p}:{line or 1}: {_loc_str(loc)}: {msg}")
        raise SparsaError("invalid grid:\n  " + "\n  ".join(msgs), hint="see docs/pipeline.md for the grid format") from None


# Grid and random sweeps are expanded (and each point validated) before any work starts: a dict and
# a key per point, and a recipe validation each (~1 ms). 100 000 points is ~100 MB and a couple of
# minutes of checks, and far more points than a sweep of real runs can finish; an 8 x 9 grid
# (43 million points) would exhaust memory before the first point ran.
MAX_POINTS = 100_000


def grid_size(grid: Grid) -> int | None:
    """Number of points a grid/random sweep has, computed without expanding it (None for optuna)."""
    if grid.mode == "grid":
        return math.prod(len(v) for v in grid.params.values())
    return grid.samples if grid.mode == "random" else None


def check_size(grid: Grid) -> None:
    n = grid_size(grid)
    if n is not None and n > MAX_POINTS:
        if grid.mode == "grid":
            counts = " x ".join(str(len(v)) for v in grid.params.values())
            raise SparsaError(f"the grid has {n:,} points ({counts} values), more than the {MAX_POINTS:,} a sweep accepts",
                              hint="give fewer values per parameter, or use mode: random or mode: optuna with "
                                   f"samples: N (N <= {MAX_POINTS:,}) to search the same space")
        raise SparsaError(f"samples: {n:,} is more than the {MAX_POINTS:,} points a random sweep accepts",
                          hint=f"use samples <= {MAX_POINTS:,}, or mode: optuna")


def expand(grid: Grid) -> list[dict[str, Any]]:
    """The points of a grid/random sweep, in a fixed order (optuna points are proposed as it goes)."""
    check_size(grid)
    names = list(grid.params)
    if grid.mode == "grid":
        points = [dict(zip(names, combo)) for combo in itertools.product(*(grid.params[n] for n in names))]
    elif grid.mode == "random":
        rng = random.Random(grid.seed)
        points = [{n: _draw(rng, grid.params[n]) for n in names} for _ in range(grid.samples)]
    else:
        return []
    if not points:
        raise SparsaError("the grid expands to no points", hint="give every parameter at least one value")
    return points


def _draw(rng: random.Random, spec):
    if isinstance(spec, list):
        return rng.choice(spec)
    import math

    if spec.log:
        v = math.exp(rng.uniform(math.log(spec.low), math.log(spec.high)))
    else:
        v = rng.uniform(spec.low, spec.high)
    return int(round(v)) if spec.int else round(v, 6)


def point_key(recipe_raw: dict, overrides: dict[str, Any]) -> str:
    """Identity of one sweep point: the recipe it starts from plus its overrides."""
    blob = json.dumps({"recipe": recipe_raw, "overrides": overrides}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
