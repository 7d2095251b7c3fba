"""`sparsa run` (execute a recipe) and `sparsa sweep` (a design-space sweep over a recipe)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sparsa.cli.app import app, emit, status_console
from sparsa.errors import SparsaError
from sparsa.io import OVERWRITE_HINT, check_out_dir, safe_folder_name, staged_folder


def _parse_sets(sets: list[str] | None) -> dict:
    from sparsa.safe_yaml import load_yaml_text

    out = {}
    for s in sets or []:
        if "=" not in s:
            raise SparsaError(f"--set {s!r}: expected PATH=VALUE", hint="e.g. --set stages.prune.heads=0.5")
        k, v = s.split("=", 1)
        try:
            out[k.strip()] = load_yaml_text(v, source=f"--set {k.strip()}")
        except SparsaError:  # not YAML: the text itself (recipe validation says if it fits)
            out[k.strip()] = v
    return out


@app.command()
def run(
    recipe: Optional[str] = typer.Argument(None, help="recipe YAML (or a bundled recipe name); default: the bundled default on the real MiniLM"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default: runs/<recipe name>)"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="override a recipe field: PATH=VALUE (dotted, repeatable)"),
    no_html: bool = typer.Option(False, "--no-html", help="write results.json only"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing output folder (else refused)"),
    json_: bool = typer.Option(False, "--json", help="print one JSON object"),
):
    """Run a recipe: compression stages, evaluation, measured latency, simulation, report."""
    from sparsa.recipe import default_recipe_path, load_recipe

    overrides = _parse_sets(set_)
    loaded = load_recipe(recipe or default_recipe_path(), overrides=overrides or None)
    out = out or Path("runs") / safe_folder_name(loaded.recipe.name)  # a name is a label, never a path
    check_out_dir(out, overwrite=overwrite)
    console = status_console(json_)
    console.print(f"[bold]sparsa run[/] {loaded.recipe.name} ({loaded.source}) → {out}")

    from sparsa.pipeline import run_recipe

    results = run_recipe(loaded, out, html=not no_html, console=console, overwrite=overwrite)
    summary = _summary(results, out)
    if json_:
        emit(summary, True)
        return
    emit(summary, False, title=f"sparsa run {loaded.recipe.name}")


def _summary(results: dict, out: Path) -> dict:
    s: dict = {"recipe": results["recipe"]["name"], "command": results["provenance"]["command"],
               "results": str(out / "results.json")}
    if results.get("report"):
        s["report"] = results["report"]
    final = results.get("final") or {}
    for k, v in (final.get("ratios") or {}).items():
        s[k] = v
    stages = results.get("stages") or []
    onnx_bytes = [st["record"]["onnx_bytes"] for st in stages if isinstance(st.get("record"), dict)
                  and st["record"].get("onnx_bytes")]
    if onnx_bytes and stages[0].get("bytes"):  # the integer ONNX file vs the dense model's bytes
        s["onnx_bytes_ratio"] = onnx_bytes[-1] / stages[0]["bytes"]
    q = final.get("quality") or {}
    if q.get("metric"):
        s[q["metric"]] = q.get("value")
    for k, v in (final.get("attention") or {}).items():
        if k.endswith("sparsity"):
            s[f"attention_{k}" if not k.startswith("attention") else k] = v
    for k, v in (results.get("latency") or {}).items():
        if isinstance(v, dict) and "median_ms" in v:
            s[f"latency_{k}_ms"] = v["median_ms"]
    hw = results.get("hardware") or {}
    for k in ("speedup", "energy_saving"):
        if k in hw:
            s[f"sim_{k}"] = hw[k]
    if hw.get("compressed", {}).get("cycles") is not None:
        s["sim_cycles"] = hw["compressed"]["cycles"]
    s["wall_s"] = round(results["timing"]["total_s"], 2)
    s["cpu_s"] = round(results["timing"].get("total_cpu_s", 0.0), 2)
    return s


@app.command()
def sweep(
    recipe: str = typer.Argument(..., help="recipe YAML (or a bundled recipe name)"),
    grid: Path = typer.Option(..., "--grid", help="grid YAML: params (dotted recipe paths), mode, objectives"),
    workers: int = typer.Option(1, "--workers", help="points run in parallel (0: one by one in this process)"),
    ray: Optional[str] = typer.Option(None, "--ray", help="run on Ray: a cluster ADDRESS, or 'local' (2-CPU local cluster)"),
    out: Optional[Path] = typer.Option(None, "--out", help="sweep folder with the resumable store (default: runs/sweep-<recipe>-<grid>)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="start over: delete an existing sweep folder "
                                   "(without it a sweep's folder is resumed; any other non-empty folder is refused)"),
    json_: bool = typer.Option(False, "--json", help="print one JSON object"),
):
    """Sweep recipe and hardware parameters; resumable; Pareto front at the end."""
    from rich.table import Table

    from sparsa.dse import load_grid, run_sweep
    from sparsa.recipe import load_recipe

    loaded = load_recipe(recipe)
    g = load_grid(grid)
    out = out or Path("runs") / safe_folder_name(f"sweep-{loaded.recipe.name}-{grid.stem}")
    _sweep_folder(out, overwrite)
    console = status_console(json_)

    def on_point(key, overrides, res):
        mark = "[green]ok[/]" if res["status"] == "ok" else f"[red]error[/] {res.get('error')}"
        console.print(f"  {key[:8]} {overrides} {mark} [dim]({(res.get('wall_s') or 0):.1f} s)[/]")

    console.print(f"[bold]sparsa sweep[/] {loaded.recipe.name} × {grid} ({g.mode}) → {out}")
    import shlex

    cmd = ["sparsa", "sweep", recipe, "--grid", str(grid), "--out", str(out)]
    summary = run_sweep(loaded, g, out, workers=workers, ray_address=ray, on_point=on_point,
                        command=" ".join(shlex.quote(c) for c in cmd))
    result = summary.to_dict()
    if json_:
        emit(result, True)
        return
    console.print(f"{summary.total} points: {summary.skipped} already done, {summary.ran} run, "
                  f"{summary.errors} errors ({summary.backend}, {summary.wall_s:.1f} s); report: {summary.report}")
    if summary.pareto:
        t = Table(title="Pareto front")
        params = list(g.params)
        metrics = [o.metric for o in g.objectives]
        for c in ["point", *params, *metrics]:
            t.add_column(c)
        for r in summary.pareto:
            t.add_row(r["key"][:8], *[str(r["overrides"].get(p)) for p in params],
                      *[f"{(r.get('metrics') or {}).get(m, float('nan')):.6g}" for m in metrics])
        console.print(t)


def _sweep_folder(out: Path, overwrite: bool) -> None:
    """A sweep resumes into its own folder (one holding its store); any other non-empty folder is
    refused unless --overwrite, which (like for a sweep folder) empties it first."""
    check_out_dir(out, overwrite=None)
    if not out.is_dir() or not any(out.iterdir()):
        return
    if overwrite:
        with staged_folder(out, overwrite=True):
            pass
    elif not ((out / "store.jsonl").is_file() or (out / "points").is_dir()):
        raise SparsaError(f"the output folder {out} already exists and holds no sweep", hint=OVERWRITE_HINT)
