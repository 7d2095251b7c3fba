"""`sparsa decompose`: PENNI kernel decomposition (+ ESCALATE hybrid quantization) of a conv model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sparsa.cli import checks
from sparsa.cli.app import app, emit, status_console
from sparsa.cli.data_size import frames_option, image_size_option, set_data_size
from sparsa.decompose.penni import PenniConfig
from sparsa.errors import SparsaError
from sparsa.io import atomic_write_json, check_out_dir, staged_folder


# every default is PenniConfig's (the recipe's decompose stage reads the same ones)
_D = PenniConfig


@app.command()
def decompose(
    model: str = typer.Argument(..., help="built-in name (tiny-cnn, tiny-videomae, ...) or a model folder"),
    out: Path = typer.Option(..., "--out", help="folder for the compressed model (reload with sparsa.models.load)"),
    method: str = typer.Option("penni", "--method", help="decomposition method (penni)"),
    basis: Optional[int] = typer.Option(_D.basis, "--basis", callback=checks.in_range(1, 64), help="basis kernels per layer (default: 5 where the kernel has more than 5 taps)"),
    tolerance: Optional[float] = typer.Option(_D.tolerance, "--tolerance", callback=checks.in_range(0, 1, lo_open=True, hi_open=True, hint="an accuracy drop as a fraction, e.g. 0.01 for one point"), help="accuracy drop the pruning may cost, as a fraction (0.01 = one point; picks the threshold scale s); default: s = 1 (ref)"),
    hybrid_quant: bool = typer.Option(False, "--hybrid-quant", help="ESCALATE: 8-bit basis, ternary coefficients, stored at those widths"),
    hybrid_epochs: int = typer.Option(_D.hybrid_epochs, "--hybrid-epochs", callback=checks.in_range(0, 1000), help="fine-tuning epochs that see the 8-bit/ternary values (with --hybrid-quant)"),
    merge: bool = typer.Option(_D.merge, "--merge", help="fold the shrunk decomposed layers back into dense convolutions (fastest on CPU)"),
    data: Optional[str] = typer.Option(None, "--data", help="labelled training data (default: the fixture's own set: digits / clips)"),
    retrain_epochs: int = typer.Option(_D.retrain_epochs, "--retrain-epochs", "--epochs", callback=checks.in_range(0, 1000), help="retraining epochs with the L1 coefficient penalty (--epochs: the older name)"),
    finetune_epochs: int = typer.Option(_D.finetune_epochs, "--finetune-epochs", callback=checks.in_range(0, 1000), help="fine-tuning epochs after pruning"),
    lam: float = typer.Option(_D.lam, "--lam", callback=checks.non_negative, help="penalty weight λ (L1 on the coefficients; with --penalty group the group-lasso weight, e.g. 0.02)"),
    s: Optional[float] = typer.Option(_D.s, "--s", callback=checks.in_range(0, 10), help="prune threshold scale: |C| < s·std(C) is zeroed (ignored with --tolerance); default 1.0 (ref) with --penalty l1, 0 (no coefficient pruning) with --penalty group"),
    shrink: str = typer.Option(_D.shrink, "--shrink", help="safe (function-preserving) | ref | none"),
    fold_bn: bool = typer.Option(_D.fold_bn, "--fold-bn", help="fold BatchNorm into the convs before decomposing (lets the L1 penalty kill whole channels)"),
    penalty: str = typer.Option(_D.penalty, "--penalty", help="l1: the seed's rule (L1 on coefficients) | group: group lasso on per-channel coefficient slices + BatchNorm γ, whole channels pruned (CPU speed; docs/penni.md)"),
    channel_s: float = typer.Option(_D.channel_s, "--channel-s", callback=checks.non_negative, help="with --penalty group: drop channels scoring below this × their group's mean"),
    channel_fraction: Optional[float] = typer.Option(_D.channel_fraction, "--channel-fraction", callback=checks.in_range(0, 1, lo_open=True, hi_open=True), help="with --penalty group: instead drop this fraction of every channel group (lowest scores)"),
    image_size: Optional[int] = image_size_option(),
    frames: Optional[int] = frames_option(),
    limit: Optional[int] = typer.Option(None, "--limit", callback=checks.positive, help="use only the first N examples of each split (quick runs); default: whole splits for small models, fewer for large ones (2e12 MACs' worth per split and epoch)"),
    linear: bool = typer.Option(_D.linear, "--linear", help="also decompose Linear layers (segments of 16 inputs, 4 basis vectors)"),
    seed: int = typer.Option(_D.seed, "--seed", callback=checks.seed),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out folder (else refused)"),
    json_: bool = typer.Option(False, "--json", help="print one JSON object"),
):
    """Decompose every convolution into basis kernels + sparse coefficients, retrain, prune and shrink (PENNI)."""
    if method != "penni":
        raise SparsaError(f"unknown decomposition method {method!r}", hint="only --method penni is implemented")
    if hybrid_quant and merge:
        raise SparsaError("--hybrid-quant and --merge exclude each other",
                          hint="the hybrid format keeps the basis/coefficient split; --merge folds it away")
    import torch

    from sparsa.decompose.flow import load_splits, run_penni
    from sparsa.models import load

    checks.out_apart_from_model(out, model)
    check_out_dir(out, overwrite=overwrite)  # before the training
    torch.set_num_threads(1)  # training on shared cores: a second thread mostly spins
    con = status_console(json_)
    lm = load(model)
    checks.require_float_layers(lm, model, "sparsa decompose", "decompose the float model it came from (PENNI then "
                                "works on its convolutions; to quantize too, use --hybrid-quant)")
    set_data_size(lm, image_size, frames)
    cfg = PenniConfig(basis=basis, linear=linear, fold_bn=fold_bn, retrain_epochs=retrain_epochs, lam=lam, s=s,
                      tolerance=tolerance, finetune_epochs=finetune_epochs, shrink=shrink, merge=merge, seed=seed,
                      hybrid_epochs=hybrid_epochs, penalty=penalty, channel_s=channel_s,
                      channel_fraction=channel_fraction)
    import copy

    from sparsa.decompose.penni import decompose as _decompose

    _decompose(copy.deepcopy(lm.model), cfg.basis, linear=cfg.linear)  # a bad --basis fails before the data load
    from sparsa.decompose.flow import split_limits

    sets = load_splits(lm, data, seed, limits=split_limits(lm, limit))
    con.print(f"PENNI on {model}: {retrain_epochs} retraining + {finetune_epochs} fine-tuning epochs on "
              f"{sets['train'].name} ({len(sets['train'])} training, {len(sets['test'])} test samples)")
    work, res = run_penni(lm, cfg, sets, hybrid=hybrid_quant,
                          log=lambda row: con.print(f"  epoch {row['epoch']} {row.get('phase', '')} loss {row['loss']:.4f}"))
    o, p = res["original"], res.get("merged", res["penni"])
    result = {
        "model": model, "method": method, "out": str(out),
        "decomposed": [l["name"] for l in res["decompose"]["layers"] if l["status"] == "decomposed"],
        "skipped": {l["name"]: l["note"] for l in res["decompose"]["layers"] if l["status"] != "decomposed"},
        "s": res["s"], "coefficient_sparsity": res["coefficient_sparsity"]["sparsity"],
        "accuracy_original": o["accuracy"], "accuracy_penni": res["penni"]["accuracy"],
        "params_original": o["params"], "params_penni": p["params"],
        "macs_original": o["macs"]["dense"], "macs_penni": res["penni"]["macs"]["penni"],
        "macs_dense_shrunk": res["penni"]["macs"]["dense"],
        "mac_reduction": 1 - res["penni"]["macs"]["penni"] / max(1, o["macs"]["dense"]),
        "shrink": res.get("shrink", {}).get("channels", {}),
        "penalty": penalty, "channels_pruned": res.get("channels_pruned"),
        "seconds": res["seconds"], "samples": res["samples"], "batch_size": res["batch_size"],
        "epochs": {"retrain": retrain_epochs, "finetune": finetune_epochs},
    }
    if hybrid_quant:
        h = res["hybrid"]
        result.update(accuracy_hybrid=h["accuracy"], bytes_hybrid=h["bytes"]["total"], bytes_original=h["original_bytes"])
    from sparsa.models.store import RESULT_FILE, write_model_files

    with staged_folder(out, overwrite=overwrite) as d:  # the model and its result.json appear together
        write_model_files(work, d)
        if hybrid_quant:
            result["file_bytes"] = (d / "model.safetensors").stat().st_size
        atomic_write_json(d / RESULT_FILE, {k: v for k, v in result.items() if k != "out"})
    emit(result, json_, title="sparsa decompose (PENNI)")
