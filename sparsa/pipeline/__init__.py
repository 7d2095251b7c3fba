"""Execute a recipe: load -> stages -> evaluation -> latency -> simulation -> report.

    from sparsa.recipe import load_recipe
    from sparsa.pipeline import run_recipe
    results = run_recipe(load_recipe("recipes/default.yaml"), out_dir="runs/default")

Every stage takes the model + data and returns the model + a record (plain data); the results are
one JSON-able dict (written to `results.json`, rendered to `report.html`). A stage whose package is
not in this build fails with a SparsaError naming it; no number is ever made up.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import time
from pathlib import Path
from typing import Any

from sparsa.io import check_out_dir, staged_folder
from sparsa.pipeline.state import PipelineState
from sparsa.recipe import LoadedRecipe, default_recipe_path

__all__ = ["run_recipe", "recreate_command", "PipelineState"]


def recreate_command(loaded: LoadedRecipe, out_dir: str | os.PathLike | None) -> str:
    """The one command that re-creates these results."""
    parts = ["sparsa", "run"]
    src = Path(loaded.source)
    if src.resolve() != default_recipe_path().resolve() or loaded.overrides:
        parts.append(_display_path(src))
    for k, v in loaded.overrides.items():
        import json

        parts += ["--set", f"{k}={json.dumps(v)}"]
    if out_dir is not None:
        parts += ["--out", _display_path(Path(out_dir))]
    return " ".join(shlex.quote(p) for p in parts)


def _display_path(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        bundled = default_recipe_path().parent
        if p.resolve().parent == bundled.resolve():
            return p.stem  # a bundled recipe: `sparsa run seed002_hdp` finds it by name
        return str(p)


def run_recipe(
    loaded: LoadedRecipe,
    out_dir: str | os.PathLike | None = None,
    *,
    html: bool = True,
    quiet: bool = False,
    threads: int | None = None,
    console=None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run the recipe; with `out_dir`, its results are built in a hidden sibling and put in place
    whole at the end (`sparsa.io.staged_folder`): an existing non-empty folder is refused unless
    `overwrite`, which replaces it, and a failed or killed run leaves no half-written folder."""
    recipe = loaded.recipe
    threads = threads or (recipe.evaluation.latency.threads if recipe.evaluation.latency else 2)
    if recipe.model is not None:  # simulator-only recipes never import torch (fast sweep points)
        import torch

        torch.set_num_threads(threads)
        torch.manual_seed(recipe.seed)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        check_out_dir(out, overwrite=overwrite)
    t_start, t_cpu0 = time.perf_counter(), time.process_time()
    results: dict[str, Any] = {
        "provenance": _provenance(loaded, out),
        "recipe": {"name": recipe.name, "digest": recipe.digest(), "source": loaded.source,
                   "overrides": loaded.overrides, "description": recipe.description, "content": recipe.canonical()},
        "timing": {},
    }
    import tempfile

    scratch = tempfile.TemporaryDirectory(prefix="sparsa-run-") if out is None else None
    staged = staged_folder(out, overwrite=overwrite) if out is not None else contextlib.nullcontext()
    try:
        with staged as work:
            state = PipelineState(recipe=loaded, out_dir=work, threads=threads, quiet=quiet,
                                  scratch=Path(scratch.name) if scratch else None)
            return _run(loaded, state, results, work, out, html, quiet, console, t_start, t_cpu0)
    finally:
        if scratch is not None:
            scratch.cleanup()


def _rebased(obj, old: str, new: str):
    """`obj` with every path string under `old` (the staging folder) moved to `new`."""
    if isinstance(obj, dict):
        return {k: _rebased(v, old, new) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_rebased(v, old, new) for v in obj)
    if isinstance(obj, str) and (obj == old or obj.startswith(old + os.sep)):
        return new + obj[len(old):]
    return obj


def _run(loaded, state, results, out, shown, html, quiet, console, t_start, t_cpu0):
    """`out`: the folder written (the staging folder), `shown`: the folder recorded in the results."""
    from sparsa.pipeline import hardware
    from sparsa.pipeline.progress import Steps

    recipe = loaded.recipe
    if recipe.model is not None:
        from sparsa.pipeline import measure
        from sparsa.pipeline.stages import RUNNERS
    labels = recipe.stage_labels()
    plan = (["load model"] if recipe.model else []) + [f"stage {lb}" for lb in labels]
    ev = recipe.evaluation
    if recipe.model:
        plan += ["evaluate"] + (["latency"] if ev.latency else [])
    if recipe.hardware:
        plan.append("simulate")
    if out is not None and html:
        plan.append("report")

    if recipe.hardware is not None and recipe.model is not None:
        hardware.load_arch(recipe.hardware, loaded.resolve_path)  # a bad preset or field fails before any work

    with Steps(plan, quiet=quiet, console=console) as steps:
        state.note = steps.note
        if recipe.model is None:  # simulator-only recipe
            with steps.step("simulate") as t:
                results["hardware"] = hardware.simulate_gemm_only(recipe.hardware, loaded.resolve_path)
            results["timing"]["simulate_s"] = t.elapsed
        else:
            with steps.step("load model") as t:
                from sparsa import decompose, models, quant  # noqa: F401  techniques register their layer kinds for load

                state.loaded = models.load(loaded.resolve_path(recipe.model))
                state.reference = state.loaded.clone()
            results["timing"]["load_s"] = t.elapsed
            results["model"] = {"name": recipe.model, "family": state.loaded.family,
                                "modality": state.loaded.modality}
            baseline = {"label": "dense", "type": "baseline"}
            baseline.update(measure.size_and_compute(state, state.reference))
            if ev.quality and ev.per_stage:
                baseline["quality"] = measure.quality(state, state.reference)
            results["stages"] = [baseline]

            for label, st in zip(labels, recipe.stages):
                with steps.step(f"stage {label}") as t:
                    record = RUNNERS[st.type](st, state)
                    entry = {"label": label, "type": st.type, "options": st.model_dump(mode="json"),
                             "record": record}
                    entry.update(measure.size_and_compute(state))
                    if ev.quality and ev.per_stage:
                        entry["quality"] = measure.quality(state)
                        if state.attention is not None:
                            entry["attention"] = _attention_totals(state)
                entry["wall_s"] = t.elapsed
                results["stages"].append(entry)

            with steps.step("evaluate") as t:
                final = {k: v for k, v in results["stages"][-1].items() if k in ("params", "nonzero_params",
                                                                                   "bytes", "macs", "macs_at")}
                if ev.quality:
                    final["quality"] = results["stages"][-1].get("quality") or measure.quality(state)
                    if state.attention is not None:
                        final["attention"] = _attention_totals(state)
                final["ratios"] = _ratios(results["stages"][0], final)
                results["final"] = final
                results["layers"] = measure.layer_sparsity(state.reference, state.loaded)
            results["timing"]["evaluate_s"] = t.elapsed
            if ev.latency:
                with steps.step("latency") as t:
                    results["latency"] = measure.latency(state)
                results["timing"]["latency_s"] = t.elapsed
            if recipe.hardware:
                with steps.step("simulate") as t:
                    results["hardware"] = hardware.simulate(state)
                results["timing"]["simulate_s"] = t.elapsed
            if out is not None and recipe.report.save_model:
                state.loaded.save(out / "model", result=results.get("final"))  # the final figures, as every command's
                if state.onnx_path is not None and Path(state.onnx_path).is_file():  # the folder carries its file,
                    from sparsa.quant.export import ONNX_FILE  # as `sparsa quantize`'s

                    _link_or_copy(Path(state.onnx_path), out / "model" / ONNX_FILE)
                results["model"]["saved"] = str(shown / "model")

        results["timing"]["total_s"] = time.perf_counter() - t_start
        results["timing"]["total_cpu_s"] = time.process_time() - t_cpu0
        results["timing"]["steps"] = dict(steps.timings)
        if out is not None:
            from sparsa.io import atomic_write_json

            results = _rebased(results, str(out), str(shown))  # paths recorded during the run name the staging folder
            atomic_write_json(out / "results.json", results)
            if html:
                with steps.step("report"):
                    from sparsa.report import write_html_report

                    write_html_report(results, out / "report.html")
                    results["report"] = str(shown / "report.html")
    return results


def _attention_totals(state: PipelineState) -> dict:
    ctrl = getattr(state.loaded.model, "_sparsa_ctrl", None)
    if ctrl is None:
        return {}
    tot = ctrl.totals()
    keep = ("block_sparsity", "head_sparsity", "attention_sparsity", "padded_to_block")
    out = {k: tot[k] for k in keep if k in tot}
    out["method"] = state.attention["method"]
    return out


def _ratios(base: dict, final: dict) -> dict:
    out = {}
    for k in ("params", "nonzero_params", "bytes", "macs"):
        if base.get(k) and final.get(k) is not None:
            out[f"{k}_ratio"] = final[k] / base[k]
    return out


def _provenance(loaded: LoadedRecipe, out: Path | None) -> dict:
    import sparsa

    return {
        "recipe": loaded.recipe.name,
        "recipe_digest": loaded.recipe.digest(),
        "command": recreate_command(loaded, out),
        "sparsa_version": sparsa.__version__,
        "git_commit": _git_commit(),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                 "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None},
    }


def _git_commit() -> str | None:
    import subprocess

    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        r = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                           text=True, timeout=5)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _link_or_copy(src: Path, dst: Path) -> None:
    """dst as a hard link to src where the file system allows it (no second copy of a large file), else a copy."""
    import shutil

    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
