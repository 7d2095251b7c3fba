"""The whole PENNI flow on a LoadedModel, as `sparsa decompose` and bench/penni.py run it.

    original -> decompose -> retrain (L1, alternating) -> prune (s·std) -> finetune -> shrink
             [-> merge back to dense convolutions]  [-> ESCALATE hybrid 8-bit / ternary]

`PenniConfig.tolerance` (an accuracy drop as a fraction, CHOICE): instead of the reference's fixed
s = 1.0, the prune threshold scale is the largest s on a grid whose pruned-but-not-yet-finetuned
accuracy on the calibration split stays within `tolerance` of the original's; finetuning then only
recovers accuracy.

`run_penni` is the one verb: `sparsa decompose` and a recipe's `decompose` stage both call it with a
PenniConfig and {train, calib, test} data sets.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict

import torch

from sparsa.decompose.cost import total_macs
from sparsa.decompose.penni import (
    LayerNote,
    PenniConfig,
    accuracy,
    coefficient_sparsity,
    coefficient_tensors,
    decompose,
    finetune,
    fold_batchnorm,
    merge_to_dense,
    prune_coefficients,
    retrain,
)
from sparsa.decompose.groups import merge_masks, prune_channels
from sparsa.decompose.shrink import shrink
from sparsa.errors import SparsaError

S_GRID = (4.0, 3.0, 2.5, 2.0, 1.75, 1.5, 1.25, 1.0, 0.75, 0.5, 0.25)


def default_data(lm) -> str:
    """The built-in data set a fixture was trained on (by modality)."""
    return {"image": "digits", "video": "clips"}.get(getattr(lm, "modality", None), "")


SPLITS = ("train", "calib", "test")


def split_limits(lm, limit: int | None = None) -> dict:
    """Samples per split: `limit` for each, else scaled by the model's MACs (`sparsa.metrics.budget`):
    a fixture gets its whole splits; ViT-B/16 37 training images per epoch and 22 to evaluate,
    VideoMAE-B 4 training clips per epoch and 4 to evaluate. The flow measures test accuracy five
    times (original, decomposed, retrained, pruned, final), so its evaluation budget is split five ways."""
    if limit:
        return {s: limit for s in SPLITS}
    from sparsa.metrics import budget

    macs = budget.macs_per_sample(lm)
    n = budget.eval_samples(macs, factor=5)
    return {"train": budget.train_samples(macs), "calib": n, "test": n}


def load_splits(lm, data: str | None, seed: int = 0, loader=None, limits: dict | None = None):
    """{train, calib, test} of `data` (default: the fixture's own set), labelled images or clips.

    loader(name, split, limit) loads one split; default `sparsa.data.load_dataset` with `seed` (the CLI);
    the pipeline passes its own cached loader, which uses the same function with the recipe's data seed.
    limits: samples per split (default: `split_limits(lm)`).
    """
    name = data or default_data(lm)
    if not name:
        raise SparsaError(f"PENNI retraining needs labelled data, and a {lm.modality} model has no built-in set",
                          hint="pass --data (an image folder or a saved data set)")
    if loader is None:
        from sparsa.data import load_dataset

        def loader(n, split, limit=None):
            return load_dataset(n, split=split, seed=seed, model=lm, limit=limit)
    limits = limits or split_limits(lm)
    sets = {s: loader(name, s, limits.get(s)) for s in SPLITS}
    if sets["train"].kind not in ("image", "video"):
        raise SparsaError(f"data set {name!r} is {sets['train'].kind}, PENNI retraining needs labelled images or clips",
                          hint="use digits / clips or an image folder")
    return sets


def choose_s(model, calib, target: float, tolerance: float, measure=None) -> tuple[float, list]:
    """Largest s in S_GRID with pruned (un-finetuned) calibration accuracy ≥ target - tolerance (a fraction)."""
    measure = measure or accuracy  # the caller's batch size, else the default
    saved = {k: t.detach().clone() for k, t in coefficient_tensors(model).items()}
    tried = []
    try:
        for s in S_GRID:
            prune_coefficients(model, s)
            acc = measure(model, calib)
            tried.append({"s": s, "calib_accuracy": acc})
            with torch.no_grad():
                for k, t in coefficient_tensors(model).items():
                    t.copy_(saved[k])
            if acc >= target - tolerance:
                return s, tried
    finally:
        with torch.no_grad():
            for k, t in coefficient_tensors(model).items():
                t.copy_(saved[k])
    return S_GRID[-1], tried


def run_penni(lm, cfg: PenniConfig, sets: dict, *, hybrid: bool = False, log=None) -> tuple[object, dict]:
    """Run the flow on a copy of `lm`; returns (compressed LoadedModel, result dict).

    hybrid: also ESCALATE's 8-bit basis / ternary coefficients (after `cfg.hybrid_epochs` of fine-tuning).
    """
    tolerance, merge = cfg.tolerance, cfg.merge
    if hybrid and merge:
        raise SparsaError("hybrid quantization and merge exclude each other",
                          hint="the hybrid format keeps the basis/coefficient split; merge folds it away")
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    work = lm.clone()
    model = work.model
    ex = lm.example_inputs(batch=2)
    res: dict = {"config": asdict(cfg), "tolerance": tolerance}
    # batches sized by the model's cost: a fixture keeps the configured ones, ViT-B/VideoMAE-B take a few
    # samples at a time (training holds ~3x a forward pass's activations)
    from functools import partial

    from sparsa.metrics import budget

    macs = budget.macs_per_sample(lm)
    train_bs = min(cfg.batch_size, budget.train_batch_size(macs))
    acc = partial(accuracy, batch_size=min(256, budget.batch_size(macs)))
    res["samples"] = {k: len(v) for k, v in sets.items()}
    res["batch_size"] = {"train": train_bs, "eval": acc.keywords["batch_size"]}
    try:
        res["original"] = _measure(lm.model, sets, ex, acc)
    except (ValueError, RuntimeError) as e:  # the data's size is not the model's: bad input, not a bug
        from sparsa.metrics.quality import shape_mismatch_error

        err = None if isinstance(e, SparsaError) else shape_mismatch_error(lm, sets["test"].x, e)
        if err is None:
            raise
        raise err from e
    if cfg.fold_bn:
        res["folded_bn"] = fold_batchnorm(model.eval())
    rec = decompose(model, cfg.basis, linear=cfg.linear)
    try:
        _runs(model, ex)
    except AttributeError as e:  # e.g. HF ViT reads patch_embeddings.projection.weight, which a PenniConv lacks
        # keep those convolutions plain and decompose the rest (with --linear, ViT's Linears)
        convs = tuple(l.name for l in rec.layers if l.status == "decomposed" and l.type in ("Conv2d", "Conv3d"))
        work = lm.clone()
        model = work.model
        if cfg.fold_bn:
            fold_batchnorm(model.eval())
        rec = decompose(model, cfg.basis, linear=cfg.linear, exclude=convs)
        rec.layers += [LayerNote(n, "Conv", "skipped", note=f"the model reads this layer's weight directly ({e})")
                       for n in convs]
        try:
            _runs(model, ex)
        except AttributeError as e2:
            raise SparsaError(f"the decomposed model no longer runs: {e2}",
                              hint="this model reads a layer's weight directly; PENNI supports plain conv nets "
                                   "(tiny-cnn), VideoMAE and Swin, and ViT's Linears with --linear") from e2
    res["decompose"] = rec.to_dict()
    if not rec.decomposed:
        raise SparsaError("no layer of this model could be decomposed",
                          hint="PENNI needs Conv2d/Conv3d layers with kernels larger than 1×1 (or --linear)")
    res["decomposed_accuracy"] = acc(model, sets["test"])
    res["retrain"] = retrain(model, sets["train"], epochs=cfg.retrain_epochs, lam=cfg.lam, lr=cfg.lr,
                             batch_size=train_bs, alternate=cfg.alternate, seed=cfg.seed, log=log,
                             penalty=cfg.penalty)
    model.eval()
    res["retrained_accuracy"] = acc(model, sets["test"])
    s = cfg.s
    if tolerance is not None:
        target = acc(lm.model, sets["calib"])
        s, res["s_search"] = choose_s(model, sets["calib"], target, tolerance, acc)
    res["s"] = s
    masks = prune_coefficients(model, s)
    if cfg.penalty == "group":  # whole channels: their consumer columns are zeroed and held at zero
        ch = prune_channels(model, ex, cfg.channel_s, cfg.channel_fraction)
        masks = merge_masks(masks, ch["masks"])
        res["channels_pruned"] = ch["removed"]
    res["pruned_accuracy"] = acc(model, sets["test"])
    res["finetune"] = finetune(model, sets["train"], epochs=cfg.finetune_epochs, lr=cfg.finetune_lr,
                               batch_size=train_bs, masks=masks, seed=cfg.seed + 1, log=log)
    model.eval()
    if cfg.shrink != "none":
        res["shrink"] = shrink(model, ex, mode=cfg.shrink)
    res["coefficient_sparsity"] = {k: v for k, v in coefficient_sparsity(model).items() if k != "per_layer"}
    res["penni"] = _measure(model, sets, ex, acc)
    if hybrid:
        from sparsa.decompose.escalate import quantize_hybrid

        hyb = copy.deepcopy(model)
        q = quantize_hybrid(hyb, sets["train"], epochs=cfg.hybrid_epochs, seed=cfg.seed, log=log)
        res["hybrid_finetune"] = q["finetune"]
        res["hybrid"] = {"record": q["layers"], "accuracy": acc(hyb, sets["test"]), "bytes": q["storage"],
                         "original_bytes": _state_bytes(lm.model)}
    if merge:
        res["merged_layers"] = merge_to_dense(model)
        res["merged"] = _measure(model, sets, ex, acc)
    if hybrid:
        work.model = hyb
        work.adapter = type(work.adapter)(hyb, work.adapter.config)
    stage = {k: res[k] for k in ("config", "tolerance", "s", "coefficient_sparsity") if k in res}
    stage.update(name="penni", decomposed=rec.decomposed, channels_pruned=res.get("channels_pruned"), folded_bn=res.get("folded_bn", []),
                 skipped={l.name: l.note for l in rec.layers if l.status != "decomposed"},
                 shrink=res.get("shrink"), merged=merge, hybrid=hybrid)
    work.record.setdefault("stages", []).append(stage)
    res["seconds"] = time.perf_counter() - t0
    return work, res


@torch.no_grad()
def _runs(model, ex) -> None:
    """One forward pass: does the model still run with its layers replaced?"""
    was = model.training
    model.eval()
    model(**{k: v[:1] for k, v in ex.items()})
    model.train(was)


def _measure(model, sets, ex, acc=None) -> dict:
    from sparsa.metrics import count_params

    was = model.training
    model.eval()
    out = {"accuracy": (acc or accuracy)(model, sets["test"]), "params": count_params(model), "macs": total_macs(model, ex)}
    model.train(was)
    return out


def _state_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())
