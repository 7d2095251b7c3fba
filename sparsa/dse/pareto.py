"""Pareto front of sweep results over named objectives (min or max each)."""

from __future__ import annotations

from typing import Any


def _vector(row: dict, objectives) -> list[float] | None:
    out = []
    for o in objectives:
        metric, goal = (o.metric, o.goal) if hasattr(o, "metric") else (o["metric"], o["goal"])
        v = (row.get("metrics") or {}).get(metric)
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            return None
        out.append(-float(v) if goal == "max" else float(v))  # everything becomes "smaller is better"
    return out


def pareto_front(rows: list[dict[str, Any]], objectives) -> list[dict[str, Any]]:
    """Rows not dominated by any other row (ties kept), sorted by the first objective."""
    scored = [(r, v) for r in rows if (v := _vector(r, objectives)) is not None]
    front = []
    for r, v in scored:
        dominated = any(
            all(a <= b for a, b in zip(w, v)) and any(a < b for a, b in zip(w, v)) for _, w in scored
        )
        if not dominated:
            front.append((r, v))
    front.sort(key=lambda rv: (rv[1], rv[0]["key"]))
    return [r for r, _ in front]
