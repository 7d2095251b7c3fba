"""`sparsa sim`: what a (compressed) model or one GEMM costs on a simulated accelerator."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from sparsa.cli.app import app, emit, status_console
from sparsa.errors import SparsaError


def _parse_gemm(text: str) -> tuple[int, int, int]:
    parts = text.split(",")
    if len(parts) != 3:
        raise SparsaError(f"--gemm {text[:60]!r} is not M,K,N", hint="e.g. --gemm 512,768,768")
    dims = []
    for name, x in zip("MKN", parts):
        x = x.strip()
        # ASCII digits only: no sign, fraction, exponent, nan or inf (and short enough for int())
        if not (x.isascii() and x.isdigit()) or len(x) > 40 or int(x) <= 0:
            raise SparsaError(f"--gemm {text[:60]!r}: {name}={x[:30]!r} is not a positive integer",
                              hint="give the shape as three positive integers M,K,N, e.g. 512,768,768")
        dims.append(int(x))
    return dims[0], dims[1], dims[2]


def _check_positive(name: str, value: int | None) -> None:
    if value is not None and value <= 0:
        raise SparsaError(f"{name} {value} must be a positive integer", hint=f"e.g. {name} 1")


def _check_batch_fits(loaded, batch: int, seq: int | None) -> None:
    """The traced pass is shapes-only, but the example inputs are real tensors: --batch 10^15 would ask
    the allocator for petabytes (or overflow torch's size arithmetic). Refuse it from one input's bytes."""
    from sparsa.models.bounds import memory_budget_bytes

    one = loaded.example_inputs(batch=1, seq_len=seq) if seq is not None else loaded.example_inputs(batch=1)
    per_input = sum(t.numel() * t.element_size() for t in one.values() if hasattr(t, "numel"))
    budget = memory_budget_bytes()
    if per_input * batch > budget:
        most = max(1, budget // max(1, per_input))
        raise SparsaError(f"--batch {batch}: the model's inputs alone would take {per_input * batch / 1e9:.3g} GB, "
                          f"and this machine holds about {budget / 1e9:.3g} GB", hint=f"use --batch {most} or less")


def _parse_opts(pairs: list[str]) -> dict:
    out = {}
    for p in pairs:
        if "=" not in p:
            raise SparsaError(f"--opt {p!r} is not KEY=VALUE", hint="e.g. --opt rho_b=0.2")
        k, v = p.split("=", 1)
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def _is_shape_spec(target: str) -> bool:
    from sparsa.hw.shape_spec import BUILTIN

    if target in BUILTIN:
        return True
    p = Path(target)
    try:
        return p.suffix in (".yaml", ".yml", ".json") and p.is_file()
    except (OSError, ValueError):  # a name too long for the filesystem, a NUL byte
        return False


def _long_sequence_form(method: str, family: str, opts: dict) -> bool:
    """Whether `method` records through HDP's long-sequence form (for the memory estimate). Swin adds a
    position bias to every score, which the plain form handles."""
    from sparsa.attention import hdp_fast
    from sparsa.attention.hdp_rows import numba as have_numba
    from sparsa.attention.methods import make_config

    return have_numba is not None and family != "swin" and hdp_fast.eligible(make_config(method, family, **opts), None)


def _layer_table(res, dense_res):
    from rich.table import Table

    t = Table(title=f"{res.workload} on {res.arch}" + (" (placeholder sizes)" if res.placeholder_arch else ""))
    for col in ("layer", "cycles", "attention %", "stall %", "bound", "memory-bound ops", "attention speedup",
                "speedup vs dense"):
        t.add_column(col)
    dense_layers = {d["layer"]: d for d in dense_res.per_layer()} if dense_res is not None else {}
    for d in res.per_layer():
        dl = dense_layers.get(d["layer"])
        sp = f"{dl['cycles'] / max(1, d['cycles']):.2f}x" if dl else "-"
        asp = f"{dl['attention_cycles'] / max(1, d['attention_cycles']):.2f}x" if dl else "-"
        t.add_row(str(d["layer"]), f"{d['cycles']:,}", f"{100 * d['attention_cycles'] / max(1, d['cycles']):.1f}",
                  f"{100 * d['stall_fraction']:.1f}", d["bound"], ", ".join(d["memory_bound_ops"]) or "-", asp, sp)
    return t


@app.command()
def sim(
    target: str = typer.Argument(None, help="model name/folder, or a shape workload: bert-base | bert-tiny | FILE.yaml"),
    arch: str = typer.Option(..., "--arch", help="architecture preset (hdp-edge, hdp-server, systolic-32-os, ...) or YAML file"),
    gemm: str = typer.Option(None, "--gemm", help="simulate one dense GEMM M,K,N instead of a model"),
    attention: str = typer.Option("dense", "--attention", help="dense, or a dynamic method whose masks are recorded (hdp, topk, ...)"),
    opt: list[str] = typer.Option([], "--opt", help="attention option KEY=VALUE (e.g. rho_b=0.2, tau_h=...)"),
    seq_len: int = typer.Option(None, "--seq-len", help="tokens per input (default: 128 for text, or the model's position limit)"),
    batch: int = typer.Option(None, "--batch", help="inputs per batch (default 1; --gemm: independent copies of the GEMM)"),
    json_: bool = typer.Option(False, "--json", help="print one JSON object"),
    per_op: bool = typer.Option(False, "--per-op", help="include every op in the JSON output"),
) -> None:
    """Simulate a model (optionally with recorded dynamic-attention masks) or one GEMM on an accelerator."""
    from sparsa.hw.arch import load_arch
    from sparsa.hw.sim import simulate, simulate_gemm
    from sparsa.hw.workload import from_model

    _check_positive("--seq-len", seq_len)
    _check_positive("--batch", batch)
    if per_op and not json_:
        raise SparsaError("--per-op adds every op to the JSON output; it needs --json", hint="add --json")
    a = load_arch(arch)
    log = status_console(json_)
    if gemm is not None:
        ignored = [o for o, given in (("a model/workload", target is not None), ("--seq-len", seq_len is not None),
                                      ("--attention", attention != "dense"), ("--opt", bool(opt)),
                                      ("--per-op", per_op)) if given]
        if ignored:
            raise SparsaError(f"--gemm simulates one GEMM: {', '.join(ignored)} does not apply to it",
                              hint="drop it, or simulate a model/workload instead of --gemm (M is the GEMM's token count)")
        m, k, n = _parse_gemm(gemm)
        copies = batch or 1
        r = simulate_gemm(m, k, n, a, count=copies)
        out = {"arch": a.name, "placeholder_arch": a.placeholder, "gemm": [m, k, n], "batch": copies, "cycles": r.cycles,
               "scalesim_total_cycles": r.detail["scalesim_total_cycles"], "stall_cycles": r.stall_cycles,
               "bound": r.bound, "latency_s": r.cycles / a.clock_hz, "utilisation": r.utilisation,
               "dram_bytes": r.dram_bytes, "energy_pj": r.energy_pj, "area_mm2": r.area_mm2,
               "folds": r.folds, "per_fold_cycles": r.detail["per_fold_cycles"]}
        emit(out, json_)
        return
    if target is None:
        raise SparsaError("give a model/workload or --gemm M,K,N", hint="e.g. sparsa sim minilm --arch hdp-edge --attention hdp")
    opts = _parse_opts(opt)
    if opts and attention == "dense":
        raise SparsaError("--opt sets options of a dynamic attention method; dense attention has none",
                          hint="add --attention hdp (or another method), or drop --opt")
    from sparsa.recipe import AttentionStage

    # the same typed options as a recipe's attention stage (names, ranges)
    stage = AttentionStage.from_cli_options(attention, opts)
    if stage.sparsity is not None:
        raise SparsaError("--opt sparsity calibrates a method's knob, which sparsa sim does not do",
                          hint="find the knob with `sparsa eval --attention M --sparsity S` (it reports the "
                               "options used), then pass those, or use a recipe's attention stage")
    opts = stage.options()
    if _is_shape_spec(target):
        from sparsa.hw.shape_spec import read_shape_spec, shape_workload

        if attention != "dense":
            raise SparsaError("--attention needs a real model to record masks from",
                              hint="give a model name/folder (e.g. minilm), or simulate the shape workload dense")
        wl = shape_workload(read_shape_spec(target), target, seq_len=seq_len, batch=batch)
        dense_wl = None
    else:
        from sparsa.models import load

        loaded = load(target)
        batch = batch or 1
        text = loaded.modality == "text"
        if text:
            seq = seq_len or loaded.adapter.default_seq_len()
            limit = loaded.adapter.max_seq_len()
            if limit and seq > limit:
                raise SparsaError(f"--seq-len {seq} is longer than {target}'s {limit} positions (max_position_embeddings)",
                                  hint=f"use --seq-len {limit} or less")
        elif seq_len is not None:
            raise SparsaError(f"--seq-len applies to text models; {target} ({loaded.family}) takes its token count "
                              "from its input size", hint="drop --seq-len")
        else:
            seq = None
        masks = None
        _check_batch_fits(loaded, batch, seq)
        inputs = loaded.example_inputs(batch=batch, seq_len=seq) if loaded.modality == "text" else loaded.example_inputs(batch=batch)
        if attention != "dense":
            from sparsa.attention import collect_masks
            from sparsa.hw.mask_budget import collect_masks_chunked, plan
            from sparsa.hw.trace import describe_inputs
            from sparsa.hw.workload import trace_loaded

            # one trace serves both workloads: recording masks does not change the ops the model runs
            tr = trace_loaded(loaded, inputs)
            dense_wl = from_model(loaded, inputs=inputs, trace=tr)
            # the score matrices of the largest attention call bound what recording the masks holds
            qk = [op for op in dense_wl.ops if op.role == "qk"]
            if not qk:
                raise SparsaError(f"{target} runs no attention product the simulator can attach {attention} masks to",
                                  hint="simulate it with --attention dense")
            per_input = max(op.m * op.n * op.count for op in qk) // batch
            grouped = attention in ("hdp", "hdp-seed", "int")  # run by hdp_attention_int, in head groups
            budget = plan(batch=batch, heads=1, tokens=max(1, math.isqrt(per_input)), layers=len(qk), grouped=grouped,
                          fast=grouped and _long_sequence_form(attention, loaded.family, opts))
            log.print(f"recording {attention} masks on {target} ({describe_inputs(inputs)}: "
                      f"{dense_wl.seq_len:,} tokens) ...")
            masks = collect_masks_chunked(collect_masks, loaded, inputs, attention, budget.chunk, **opts)
            wl = from_model(loaded, masks=masks, inputs=inputs, trace=tr)
        else:
            wl, dense_wl = from_model(loaded, inputs=inputs), None
    res = simulate(wl, a)
    dense_res = simulate(dense_wl, a) if dense_wl is not None else None
    out = res.to_dict(per_op=per_op)
    if not per_op:
        out["layers"] = res.per_layer()
    out["utilisation"] = res.utilisation(a.macs)
    out["workload"] = wl.summary()
    if dense_res is not None:
        out["dense"] = {"cycles": dense_res.cycles, "energy_pj": dense_res.energy_pj, "dram_bytes": dense_res.dram_bytes}
        out["speedup_vs_dense"] = dense_res.cycles / max(1, res.cycles)
        out["energy_saving_vs_dense"] = 1 - res.energy_pj / dense_res.energy_pj
    if json_:
        emit(out, True)
        return
    from rich.table import Table

    from sparsa.cli.app import console

    console.print(_layer_table(res, dense_res))
    summary = Table(show_header=False)
    summary.add_column("field")
    summary.add_column("value")
    rows = [("cycles", f"{res.cycles:,}"), ("latency", f"{res.latency_s * 1e3:.4g} ms"),
            ("stall cycles", f"{res.stall_cycles:,}"), ("utilisation", f"{100 * out['utilisation']:.1f}%"),
            ("DRAM traffic", f"{res.dram_bytes / 1e6:.4g} MB"), ("energy", f"{res.energy_pj / 1e6:.4g} uJ"),
            ("area", f"{res.area_mm2['total']:.4g} mm^2" + ("" if a.area.fpga is None else f" (FPGA: {a.area.fpga})"))]
    if dense_res is not None:
        rows += [("speedup vs dense", f"{out['speedup_vs_dense']:.2f}x"),
                 ("energy saving vs dense", f"{100 * out['energy_saving_vs_dense']:.1f}%")]
    for r in rows:
        summary.add_row(*r)
    console.print(summary)
    if a.placeholder:
        console.print(f"[yellow]note:[/] {a.name}'s sizes are placeholders ({a.reference})")
    for d in wl.meta.get("not_simulated") or []:  # ops the tracer could not place: never silently dropped
        console.print(f"[yellow]not simulated:[/] {d['name']} ({d['op']}, {d['calls']} call(s), "
                      f"{100 * d['share']:.2f}% of the flop counter's MACs)")
