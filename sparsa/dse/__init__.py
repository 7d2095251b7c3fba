"""Design-space sweeps over recipe and hardware parameters, resumable, on a process pool or Ray."""

from sparsa.dse.grid import Grid, expand, load_grid, point_key
from sparsa.dse.pareto import pareto_front
from sparsa.dse.store import SweepStore
from sparsa.dse.sweep import SweepSummary, run_sweep

__all__ = ["Grid", "SweepStore", "SweepSummary", "expand", "load_grid", "pareto_front", "point_key", "run_sweep"]
