"""The sweep report: every point, the Pareto front (table + plot), each row's re-create command."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from sparsa.io import atomic_write_json, atomic_write_text
from sparsa.report import plots
from sparsa.report.html import esc, figure, page, table


def point_command(loaded, overrides: dict) -> str:
    parts = ["sparsa", "run", _src(loaded.source)]
    for k, v in overrides.items():
        parts += ["--set", f"{k}={json.dumps(v)}"]
    return " ".join(shlex.quote(p) for p in parts)


def _src(source: str) -> str:
    p = Path(source)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def write_sweep_report(store, grid, loaded, summary) -> Path:
    rows = list(store.latest().values())
    ok = [r for r in rows if r.get("status") == "ok"]
    errs = [r for r in rows if r.get("status") != "ok"]
    objectives = [o.model_dump() for o in grid.objectives]
    front_keys = {r["key"] for r in summary.pareto}
    recipe = loaded.recipe
    sweep_cmd = summary.command or f"sparsa sweep {_src(loaded.source)} --grid GRID --out {summary.out_dir}"
    prov = {"recipe": recipe.name, "recipe_digest": recipe.digest(), "command": sweep_cmd}
    params = list(grid.params)
    metric_cols = [o["metric"] for o in objectives]
    heads = ["point"] + [p.split(".")[-1] for p in params] + [m.split(".")[-1] for m in metric_cols] + ["front", "re-create"]
    titles = ["point"] + params + metric_cols + ["on the Pareto front", "command that re-creates this point"]

    def line(r):
        return ([r["key"][:8]] + [r["overrides"].get(p) for p in params]
                + [(r.get("metrics") or {}).get(m) for m in metric_cols]
                + ["yes" if r["key"] in front_keys else "", point_command(loaded, r["overrides"])])

    parts = [f"<h1>sparsa sweep: {esc(recipe.name)}</h1>",
             table(["", ""], [["recipe", f"{recipe.name} ({loaded.source})"], ["recipe digest", recipe.digest()],
                              ["mode", grid.mode], ["points", summary.total], ["errors", len(errs)],
                              ["backend", summary.backend], ["store", str(store.path)]])]
    if objectives:
        parts.append("<h2>Pareto front</h2>")
        parts.append(figure(plots.pareto_plot(ok, summary.pareto, objectives, sweep_cmd), "Pareto front", prov))
        parts.append(table(heads, [line(r) for r in summary.pareto], prov, cls="points", titles=titles))
    parts.append("<h2>All points</h2>")
    parts.append("<p class='prov'>columns: " + esc(", ".join(params + metric_cols)) + "</p>")
    parts.append(table(heads, [line(r) for r in ok], prov, cls="points", titles=titles))
    if errs:
        parts.append("<h2>Failed points</h2>")
        parts.append(table(["point"] + params + ["error"],
                           [[r["key"][:8]] + [r["overrides"].get(p) for p in params] + [r.get("error")] for r in errs]))
    out = Path(summary.out_dir)
    atomic_write_json(out / "pareto.json", {"objectives": objectives, "front": summary.pareto,
                                            "recipe": recipe.name, "recipe_digest": recipe.digest()})
    return atomic_write_text(out / "sweep_report.html", page(f"sparsa sweep: {recipe.name}", "\n".join(parts)))
