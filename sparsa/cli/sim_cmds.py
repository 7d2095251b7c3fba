"""`sparsa sim`: what a (compressed) model or one GEMM costs on a simulated accelerator."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from sparsa.cli.app import app, emit, status_console
from sparsa.errors import SparsaError


def _parse_gemm(text: str) -> tuple[int, int, int]:
    try:
        m, k, n = (int(x) for x in text.split(","))
    except ValueError:
        raise SparsaError(f"--gemm {text!r} is not M,K,N", hint="e.g. --gemm 512,768,768") from None
    return m, k, n


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


def _shape_workload(spec: str, seq_len: int | None, masks_from: str | None):
    """A workload from a shape file (YAML/JSON with from_shapes arguments) or a built-in shape name."""
    import yaml

    from sparsa.hw.workload import from_shapes

    builtin = {
        "bert-base": dict(num_layers=12, hidden=768, heads=12, ffn=3072),
        "bert-tiny": dict(num_layers=2, hidden=128, heads=2, ffn=512),
        "minilm-shapes": dict(num_layers=6, hidden=384, heads=12, ffn=1536),
    }
    if spec in builtin:
        args = dict(builtin[spec])
    else:
        try:
            args = yaml.safe_load(Path(spec).read_text())
        except yaml.YAMLError as e:
            raise SparsaError(f"{spec}: malformed YAML: {e}", hint="check the file's indentation and syntax") from None
        if not isinstance(args, dict):
            raise SparsaError(f"{spec}: expected a mapping of shape fields", hint="e.g. {num_layers: 12, hidden: 768, heads: 12, ffn: 3072}")
        args = {k: v for k, v in args.items() if k != "kind"}
        if "layers" in args:  # per-layer shapes: a list of {hidden, heads, head_dim, ffn}
            from sparsa.hw.workload import LayerShape

            layers = args["layers"]
            try:
                if not isinstance(layers, list) or not all(isinstance(l, dict) for l in layers):
                    raise TypeError("layers must be a list of mappings")
                args["layers"] = [LayerShape(**l) for l in layers]
            except TypeError as e:
                raise SparsaError(f"{spec}: layers: {e}",
                                  hint="e.g. layers: [{hidden: 768, heads: 12, head_dim: 64, ffn: 3072}, ...]") from None
    if seq_len is not None:
        args["seq_len"] = seq_len
    try:
        return from_shapes(name=spec, **args)
    except TypeError as e:
        raise SparsaError(f"{spec}: {e}", hint="fields: num_layers, hidden, heads, head_dim, ffn, seq_len, batch") from None


def _is_shape_spec(target: str) -> bool:
    if target in ("bert-base", "bert-tiny", "minilm-shapes"):
        return True
    p = Path(target)
    return p.is_file() and p.suffix in (".yaml", ".yml", ".json")


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
    seq_len: int = typer.Option(None, "--seq-len", help="tokens per input (default: 128 for text)"),
    batch: int = typer.Option(1, "--batch", help="inputs per batch"),
    json_: bool = typer.Option(False, "--json", help="print one JSON object"),
    per_op: bool = typer.Option(False, "--per-op", help="include every op in the JSON output"),
) -> None:
    """Simulate a model (optionally with recorded dynamic-attention masks) or one GEMM on an accelerator."""
    from sparsa.hw.arch import load_arch
    from sparsa.hw.sim import simulate, simulate_gemm
    from sparsa.hw.workload import from_model

    a = load_arch(arch)
    log = status_console(json_)
    if gemm is not None:
        m, k, n = _parse_gemm(gemm)
        r = simulate_gemm(m, k, n, a)
        out = {"arch": a.name, "placeholder_arch": a.placeholder, "gemm": [m, k, n], "cycles": r.cycles,
               "scalesim_total_cycles": r.detail["scalesim_total_cycles"], "stall_cycles": r.stall_cycles,
               "bound": r.bound, "latency_s": r.cycles / a.clock_hz, "utilisation": r.utilisation,
               "dram_bytes": r.dram_bytes, "energy_pj": r.energy_pj, "area_mm2": r.area_mm2,
               "folds": r.folds, "per_fold_cycles": r.detail["per_fold_cycles"]}
        emit(out, json_)
        return
    if target is None:
        raise SparsaError("give a model/workload or --gemm M,K,N", hint="e.g. sparsa sim minilm --arch hdp-edge --attention hdp")
    opts = _parse_opts(opt)
    if _is_shape_spec(target):
        if attention != "dense":
            raise SparsaError("--attention needs a real model to record masks from",
                              hint="give a model name/folder (e.g. minilm), or simulate the shape workload dense")
        wl = _shape_workload(target, seq_len, None)
        dense_wl = None
    else:
        from sparsa.models import load

        loaded = load(target)
        seq = seq_len or 128
        masks = None
        if seq_len is not None and loaded.modality != "text":
            raise SparsaError(f"--seq-len applies to text models; {target} takes {loaded.modality} input of the "
                              "size in its config", hint="leave --seq-len out")
        inputs = loaded.example_inputs(batch=batch, seq_len=seq) if loaded.modality == "text" else loaded.example_inputs(batch=batch)
        if attention != "dense":
            from sparsa.attention import collect_masks

            from sparsa.hw.trace import describe_inputs

            log.print(f"recording {attention} masks on {target} ({describe_inputs(inputs)}) ...")
            masks = collect_masks(loaded, inputs, attention, **opts)
        wl = from_model(loaded, masks=masks, inputs=inputs)
        dense_wl = from_model(loaded, inputs=inputs) if masks is not None else None
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
