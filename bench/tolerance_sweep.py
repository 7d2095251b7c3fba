"""Tolerance-driven (adaptive iterative) pruning vs one-shot pruning at the same compression.

    python bench/tolerance_sweep.py [--model tiny-swin] [--tolerances 0.05 0.02 0.01] [--out bench/_work/tolsweep]
        [--accept upper_bound|point] [--confidence 0.95] [--rounds-max N] [--budget-s S]
    python bench/tolerance_sweep.py --video [--video-clips 200]   # L1 heads+FFN pruning of tiny-videomae
    python bench/tolerance_sweep.py --model mnist-swin --structured --recovery-epochs 0.5 --baselines short
        # heads+FFN pruning of the mnist Swin, checked on 1,000 real images

``--model mnist-swin`` (the data default to ``mnist``) checks on mnist's calib split (1,000 images) and
reports on its disjoint test split (1,000); every row also gives the test cross-entropy of the dense and
the pruned model, so "test loss within the tolerance" can be read both ways (the rule itself bounds the
accuracy drop).

Seed 001's setting at fixture scale: the seed's rule (docs/algorithms.md §3: unstructured magnitude,
round-robin per layer, 1 epoch of fine-tuning per round) on the tiny Swin fixture and the digits set
(check split = calib, reported = test). A step is accepted when the one-sided `--confidence` upper
bound of the paired accuracy drop on the check split is within the tolerance (`--accept point`:
the seed's rule, the measured drop itself). One-shot baseline: every prunable Linear magnitude-pruned to
the same overall compression in one step (uniform per-layer sparsity), without and with the same
2 epochs of the same fine-tuning. Prints a markdown table (runs resume: see --table).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import time
from pathlib import Path

import torch


def magnitude_prune(lm, sparsity: dict[str, float]):
    """A copy of `lm` with each slot magnitude-pruned in one step to its sparsity; also the masks."""
    from sparsa.prune.operators import UnstructuredOperator

    out = lm.clone()
    masks = {}
    with torch.no_grad():
        for s, u in sparsity.items():
            p = out.model.get_parameter(s)
            masks[s] = UnstructuredOperator.mask_for(p, u)
            p.mul_(masks[s])
    return out, masks


def one_shot(lm, compression: float, slots: list[str], params_total: int):
    """Magnitude-prune each slot to the uniform sparsity that removes `compression` of all params."""
    prunable = sum(lm.model.get_parameter(s).numel() for s in slots)
    u = min(0.999, compression * params_total / prunable)
    return (*magnitude_prune(lm, dict.fromkeys(slots, u)), u)


def one_shot_like(lm, pruned, slots: list[str]):
    """Magnitude-prune each slot of `lm` in one step to the sparsity that slot has in `pruned` (the
    schedule's result): the same per-layer sparsities, so the same compression and layout."""
    return magnitude_prune(lm, {s: float((pruned.model.get_parameter(s) == 0).float().mean()) for s in slots})


def _finished(out: Path) -> dict | None:
    """The result of a finished run in `out` (tolerance_prune resumes unfinished ones, refuses finished ones)."""
    p = out / "result.json"
    return {**json.loads(p.read_text()), "model": str(out)} if p.is_file() else None  # the folder is the model


def recovery_epochs(out: Path) -> int:
    """Rounds of a tolerance run (its log in `out`) that ran recovery: one epoch each."""
    events = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    return sum(1 for e in events if e.get("event") == "round" and (e.get("recovery") or {}).get("steps"))


def cross_entropy(lm, ds) -> float:
    """Mean test cross-entropy (nats) of a classifier on a labelled set."""
    from sparsa.metrics.quality import predict_logits

    return float(torch.nn.functional.cross_entropy(predict_logits(lm, ds.x, 64).float(), ds.y))


def run_sweep(args) -> list[dict]:
    from sparsa.data import load_dataset
    from sparsa.metrics import accuracy, count_params
    from sparsa.models import load
    from sparsa.prune.finetune import finetune
    from sparsa.prune.operators import UnstructuredOperator
    from sparsa.prune.schedule import tolerance_prune

    dense = load(args.model)
    if dense.modality == "video":  # generated clips: check and test splits as large as asked
        from sparsa.data.video import load_clips

        n = args.video_clips
        data = {"check": load_clips("calib", per_class=n), "report": load_clips("test", per_class=n),
                "train": load_clips("train")}
        test, train = data["report"], data["train"]
    else:
        data = args.data
        test, train = load_dataset(data, "test", model=dense), load_dataset(data, "train", model=dense)
        n_check = len(load_dataset(data, "calib", model=dense))  # the schedule's check split
    a_dense = accuracy(dense, test)
    ce_dense = cross_entropy(dense, test)
    slots = UnstructuredOperator(dense).slots
    n_params = count_params(dense.model)
    rows = []
    for tol in args.tolerances:
        for rollback in (True, False) if args.both_rollback else (True,):
            out = Path(args.out) / _run_name(tol, rollback, args.accept, args.kd, args.confidence)
            if dense.modality == "video":
                out = out.with_name(f"{args.model}-{out.name}-n{args.video_clips}")
            if args.fresh and out.exists():
                shutil.rmtree(out)
            t0 = time.perf_counter()
            r = _finished(out) or tolerance_prune(dense, tol, data, out, granularity="unstructured", kd=args.kd,
                                recovery_lr=args.recovery_lr,
                                rollback=rollback, progress=not args.quiet, seed=0, accept=args.accept,
                                confidence=args.confidence, max_rounds=args.rounds_max, budget_s=args.budget_s)
            wall = time.perf_counter() - t0
            ft_epochs = recovery_epochs(out)
            ce = cross_entropy(load(r["model"]), test)
            os_lm, masks, u = one_shot(dense, r["compression"], slots, n_params)
            a_os = accuracy(os_lm, test)
            # the same recovery recipe as the adaptive run (default: CE, lr 1e-5, masks fixed), 2 epochs
            finetune(os_lm, train, epochs=2, lr=args.recovery_lr, kd=args.kd, masks=masks, progress=False,
                     teacher=dense if args.kd != "none" else None)
            a_os_ft = accuracy(os_lm, test)
            # one-shot to the schedule's own per-layer sparsities, with the same recovery
            like, like_masks = one_shot_like(dense, load(r["model"]), slots)
            a_like = accuracy(like, test)
            finetune(like, train, epochs=2, lr=args.recovery_lr, kd=args.kd, masks=like_masks, progress=False,
                     teacher=dense if args.kd != "none" else None)
            a_like_ft = accuracy(like, test)
            if ft_epochs > 2 and args.baselines == "short":  # the schedule's whole budget: skipped
                a_like_ft_all = None
            elif ft_epochs > 2:  # and with the schedule's whole recovery budget (its rounds' epochs)
                finetune(like, train, epochs=ft_epochs - 2, lr=args.recovery_lr, kd=args.kd, masks=like_masks,
                         progress=False, teacher=dense if args.kd != "none" else None)
            if ft_epochs <= 2 or args.baselines == "all":
                a_like_ft_all = accuracy(like, test)
            rows.append({"model": args.model, "tolerance": tol, "rollback": rollback, "accept": args.accept, "confidence": args.confidence,
                         "kd": args.kd, "recovery_lr": args.recovery_lr,
                         "check_upper_pts": 100 * r["check_loss_upper"], "compression": r["compression"],
                         "dense_acc": a_dense, "acc": r["accuracy"], "loss_pts": 100 * (a_dense - r["accuracy"]),
                         "check_loss_pts": 100 * (r["dense_check_accuracy"] - r["check_accuracy"]),
                         "oneshot_loss_pts": 100 * (a_dense - a_os), "oneshot_ft_loss_pts": 100 * (a_dense - a_os_ft),
                         "like_loss_pts": 100 * (a_dense - a_like), "like_ft_loss_pts": 100 * (a_dense - a_like_ft),
                         "like_ft_all_loss_pts": None if a_like_ft_all is None else 100 * (a_dense - a_like_ft_all),
                         "data": getattr(data, "name", data) if not isinstance(data, dict) else "clips",
                         "check_n": n_check if not isinstance(data, dict) else len(data["check"]), "test_n": len(test),
                         "test_ce_dense": ce_dense, "test_ce": ce, "ce_rise_pct": 100 * (ce / ce_dense - 1),
                         "oneshot_layer_sparsity": u, "rounds": r["rounds"], "trials": r["trials"],
                         "ft_epochs": ft_epochs, "wall_s": wall, "stop": r["stop_reason"]})
            print(json.dumps(rows[-1]), flush=True)
            with open(Path(args.out) / "rows.jsonl", "a") as f:  # so parallel runs can be tabled together
                f.write(json.dumps(rows[-1]) + "\n")
    return rows


def structured_one_shot(dense, pruned):
    """One-shot L1 heads + FFN pruning of `dense` to exactly `pruned`'s architecture (the same number
    of heads and FFN neurons in every layer, hence the same compression), the units chosen in one
    step from the dense weights: the one-shot counterpart of a structured tolerance run."""
    from sparsa.prune import PrunePlan, prune
    from sparsa.prune.importance import compute_importance

    kinds = ("heads", "ffn")
    scores = compute_importance(dense, "l1_group", groups={k: dense.adapter.groups(k) for k in kinds})
    sizes = {k: {g.name: g.size for g in pruned.adapter.groups(k)} for k in kinds}
    keep = {k: {name: sorted(torch.sort(-s.float(), stable=True).indices[:sizes[k][name]].tolist())
                for name, s in per_group.items()} for k, per_group in scores.items()}
    return prune(dense, PrunePlan(keep=keep))


def run_video(args) -> list[dict]:
    """Seed 000's setting: structured L1 heads + FFN pruning of tiny-videomae under each tolerance,
    checked on `--video-clips` generated clips per class (calib stream) and reported on as many
    test clips; one-shot at the same compression for comparison; every result saved and reloaded.
    With `--structured` the same for `--model` on `--data` (check = calib split, report = test)."""
    from sparsa.data import load_dataset
    from sparsa.data.video import load_clips
    from sparsa.metrics import accuracy, count_params
    from sparsa.models import load
    from sparsa.prune.finetune import finetune
    from sparsa.prune.schedule import tolerance_prune

    if args.video:
        dense, tag, n = load("tiny-videomae"), "videomae", args.video_clips
        data = {"check": load_clips("calib", per_class=n), "report": load_clips("test", per_class=n),
                "train": load_clips("train")}
    else:
        dense, tag, n = load(args.model), Path(args.model).name, ""
        data = {"check": load_dataset(args.data, "calib", model=dense), "report": load_dataset(args.data, "test", model=dense),
                "train": load_dataset(args.data, "train", model=dense)}
    a_dense = accuracy(dense, data["report"])
    ce_dense = cross_entropy(dense, data["report"])
    rows = []
    for tol in args.tolerances:
        d0, dmax, dmin = args.video_delta
        out = Path(args.out) / f"{tag}-tol{tol:g}-{args.accept}-c{args.confidence:g}-n{n}-d{d0:g}-{dmax:g}-{dmin:g}-t{args.video_trial_steps}"
        if args.recovery_epochs != 1.0:
            out = out.with_name(f"{out.name}-e{args.recovery_epochs:g}")
        if args.fresh and out.exists():
            shutil.rmtree(out)
        t0 = time.perf_counter()
        r = _finished(out) or tolerance_prune(dense, tol, data, out, granularity="structured", scope="layer", kinds=("heads", "ffn"),
                            importance="l1_group", delta0=args.video_delta[0], delta_max=args.video_delta[1],
                            delta_min=args.video_delta[2], trial_recovery_steps=args.video_trial_steps,
                            round_recovery_epochs=args.recovery_epochs, recovery_lr=5e-4, kd="logits", accept=args.accept,
                            confidence=args.confidence, max_rounds=args.rounds_max, budget_s=args.budget_s,
                            progress=not args.quiet)
        wall = time.perf_counter() - t0
        back = load(r["model"])
        ft_epochs = recovery_epochs(out)
        os_lm = structured_one_shot(dense, back)
        os_c = 1 - count_params(os_lm.model) / count_params(dense.model)
        a_os = accuracy(os_lm, data["report"])
        finetune(os_lm, data["train"], teacher=dense, epochs=2, lr=5e-4, kd="logits", progress=False)
        a_os_ft = accuracy(os_lm, data["report"])
        # and with as many recovery epochs as the schedule spent in its rounds (the same budget)
        a_os_ft_all = a_os_ft
        if ft_epochs > 2 and args.baselines == "short":
            a_os_ft_all = None
        elif ft_epochs > 2:
            finetune(os_lm, data["train"], teacher=dense, epochs=ft_epochs - 2, lr=5e-4, kd="logits", progress=False)
            a_os_ft_all = accuracy(os_lm, data["report"])
        rows.append({"tolerance": tol, "accept": args.accept, "confidence": args.confidence, "clips_per_class": n,
                     "compression": r["compression"], "dense_acc": a_dense, "acc": r["accuracy"],
                     "loss_pts": 100 * (a_dense - r["accuracy"]), "reloaded_acc": accuracy(back, data["report"]),
                     "reloaded_params": count_params(back.model),
                     "check_loss_pts": 100 * (r["dense_check_accuracy"] - r["check_accuracy"]),
                     "check_upper_pts": 100 * r["check_loss_upper"], "macs": r["macs"], "macs_dense": r["macs_dense"],
                     "oneshot_compression": os_c, "oneshot_loss_pts": 100 * (a_dense - a_os),
                     "oneshot_ft_loss_pts": 100 * (a_dense - a_os_ft), "ft_epochs": ft_epochs,
                     "oneshot_ft_all_loss_pts": None if a_os_ft_all is None else 100 * (a_dense - a_os_ft_all),
                     "model": tag, "data": "clips" if args.video else args.data, "check_n": len(data["check"]),
                     "test_n": len(data["report"]), "test_ce_dense": ce_dense, "test_ce": cross_entropy(back, data["report"]),
                     "rounds": r["rounds"], "wall_s": wall,
                     "stop": r["stop_reason"]})
        rows[-1]["ce_rise_pct"] = 100 * (rows[-1]["test_ce"] / ce_dense - 1)
        print(json.dumps(rows[-1]), flush=True)
        with open(Path(args.out) / "rows-structured.jsonl", "a") as f:
            f.write(json.dumps(rows[-1]) + "\n")
    return rows


def video_table(rows) -> str:
    lines = ["| tolerance | compression | MACs | acc. loss (test, pts) | reloaded acc. | check loss (95% bound) | "
             "one-shot compression | one-shot loss | one-shot + 2 KD epochs | one-shot + the schedule's KD epochs | rounds | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {100 * r['tolerance']:g}% | {100 * r['compression']:.1f}% | {r['macs'] / 1e6:.1f}M / "
                     f"{r['macs_dense'] / 1e6:.1f}M | {r['loss_pts']:.2f} | {r['reloaded_acc']:.4f} | "
                     f"{r['check_loss_pts']:.2f} ({r['check_upper_pts']:.2f}) | {100 * r['oneshot_compression']:.1f}% | "
                     f"{r['oneshot_loss_pts']:.2f} | {r['oneshot_ft_loss_pts']:.2f} | "
                     f"{'-' if r['oneshot_ft_all_loss_pts'] is None else format(r['oneshot_ft_all_loss_pts'], '.2f')} "
                     f"({max(2, r['ft_epochs'])}) | {r['rounds']} | {r['wall_s']:.0f} |")
    return "\n".join(lines)


def _run_name(tol: float, rollback: bool, accept: str, kd: str = "none", confidence: float = 0.95) -> str:
    return (f"tol{tol:g}{'' if rollback else '-norollback'}{'' if accept == 'point' else '-' + accept}"
            f"{'' if accept == 'point' or confidence == 0.95 else f'-c{confidence:g}'}{'' if kd == 'none' else '-kd' + kd}")


def _rule(r) -> str:
    accept = r.get("accept", "point")
    rule = "point" if accept == "point" else f"bound {100 * r.get('confidence', 0.95):g}%"
    kd = r.get("kd", "none")
    return rule if kd == "none" else f"{rule}, KD {kd} lr {r['recovery_lr']:g}"


def table(rows) -> str:
    lines = ["| tolerance | accept rule | rollback | compression | acc. loss (test, pts) | loss on check split (bound) | "
             "one-shot loss | one-shot + 2 FT epochs | one-shot, schedule's layer sparsities (+ 2 / + the schedule's "
             "FT epochs) | rounds | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        upper = f" ({r['check_upper_pts']:.2f})" if "check_upper_pts" in r else ""
        like_all = "-" if r.get("like_ft_all_loss_pts") is None else f"{r['like_ft_all_loss_pts']:.2f}"
        like = (f"{r['like_loss_pts']:.2f} ({r['like_ft_loss_pts']:.2f} / {like_all}, "
                f"{max(2, r['ft_epochs'])} epochs)" if "like_ft_loss_pts" in r else "-")
        lines.append(f"| {100 * r['tolerance']:g}% | {_rule(r)} | {'yes' if r['rollback'] else 'no'} | "
                     f"{100 * r['compression']:.1f}% | {r['loss_pts']:.2f} | {r['check_loss_pts']:.2f}{upper} | "
                     f"{r['oneshot_loss_pts']:.2f} | {r['oneshot_ft_loss_pts']:.2f} | {like} | {r['rounds']} | "
                     f"{r['wall_s']:.0f} |")
    return "\n".join(lines)


def loss_table(rows) -> str:
    """Both readings of "test loss within the tolerance": the accuracy drop the rule bounds (points,
    dense minus pruned on the test split) and the relative rise of the test cross-entropy."""
    lines = ["| tolerance | check / test images | compression | test acc. dense → pruned | acc. drop (test, pts) | "
             "check drop (95% bound) | test cross-entropy dense → pruned (rise) | one-shot loss (+ 2 epochs) | "
             "rounds | wall s | stop |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {100 * r['tolerance']:g}% | {r['check_n']} / {r['test_n']} | {100 * r['compression']:.1f}% | "
                     f"{100 * r['dense_acc']:.2f} → {100 * r['acc']:.2f}% | {r['loss_pts']:.2f} | "
                     f"{r['check_loss_pts']:.2f} ({r['check_upper_pts']:.2f}) | {r['test_ce_dense']:.4f} → "
                     f"{r['test_ce']:.4f} ({r['ce_rise_pct']:+.1f}%) | {r['oneshot_loss_pts']:.2f} "
                     f"({r['oneshot_ft_loss_pts']:.2f}) | {r['rounds']} | {r['wall_s']:.0f} | {r['stop']} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-swin")
    p.add_argument("--data", default=None, help="labelled set (default: mnist for mnist-swin, else digits)")
    p.add_argument("--baselines", choices=("all", "short"), default="all",
                   help="short: skip the one-shot baseline fine-tuned for the schedule's whole budget (its longest part)")
    p.add_argument("--tolerances", type=float, nargs="+", default=[0.05, 0.02, 0.01])
    p.add_argument("--out", default="bench/_work/tolsweep")
    p.add_argument("--both-rollback", action="store_true", help="also run rollback=False (the seed's Table 1 reading)")
    p.add_argument("--accept", choices=("upper_bound", "point"), default="upper_bound",
                   help="accept a step when the confidence upper bound (default) / the point estimate of the drop is within tolerance")
    p.add_argument("--confidence", type=float, default=0.95, help="one-sided level of the upper bound")
    p.add_argument("--rounds-max", type=int, default=50)
    p.add_argument("--kd", default="none", choices=("none", "logits"),
                   help="recovery loss (none = CE on labels, the seed's fine-tuning; logits = KD from the dense model)")
    p.add_argument("--recovery-lr", type=float, default=1e-5)
    p.add_argument("--budget-s", type=float, default=None, help="wall-clock budget per tolerance run (keeps the last accepted state)")
    p.add_argument("--video", action="store_true", help="run the tiny-videomae structured case instead")
    p.add_argument("--structured", action="store_true",
                   help="the video run's structured L1 heads+FFN schedule, on --model and --data")
    p.add_argument("--recovery-epochs", type=float, default=1.0,
                   help="structured runs: fine-tuning epochs after each round (fractions use part of the train split)")
    p.add_argument("--video-clips", type=int, default=200,
                   help="generated clips per class in the video run's check and test splits")
    p.add_argument("--video-trial-steps", type=int, default=0,
                   help="KD steps after each trial step of the video run, before its accuracy is checked")
    p.add_argument("--video-delta", type=float, nargs=3, default=[0.1, 0.25, 0.02], metavar=("D0", "DMAX", "DMIN"),
                   help="the video run's step sizes δ0, δ_max, δ_min (fractions of a layer's remaining units)")
    p.add_argument("--fresh", action="store_true", help="delete earlier run folders (else they resume)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--table", action="store_true", help="only print the table of the rows recorded so far")
    args = p.parse_args()
    if args.data is None:
        args.data = "mnist" if args.model == "mnist-swin" else "digits"
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    from sparsa.metrics.cpu import cpu_line

    print(cpu_line())
    print(f"# {platform.machine()} threads={args.threads} load={os.getloadavg()[0]:.1f} torch {torch.__version__}")
    if args.table:
        rows = [json.loads(l) for l in (Path(args.out) / "rows.jsonl").read_text().splitlines()]
        rows = sorted({(r["tolerance"], r["rollback"], _rule(r)): r for r in rows}.values(),
                      key=lambda r: (-r["tolerance"], _rule(r), not r["rollback"]))
        for r in rows:  # a resumed run's wall time is the sum over its invocations
            res = Path(args.out) / _run_name(r["tolerance"], r["rollback"], r.get("accept", "point"),
                                             r.get("kd", "none"), r.get("confidence", 0.95)) / "result.json"
            if res.is_file():
                r["wall_s"] = json.loads(res.read_text())["elapsed_s"]
        print(table(rows))
        if all("test_ce" in r for r in rows):
            print()
            print(loss_table(rows))
        return
    if args.video or args.structured:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        rows = run_video(args)
        what = f"{6 * args.video_clips} clips" if args.video else f"{rows[0]['test_n']} {args.data} test images"
        print(f"\n{rows[0]['model']}, dense test accuracy {rows[0]['dense_acc']:.4f} on {what}\n")
        print(video_table(rows))
        print()
        print(loss_table(rows))
    else:
        rows = run_sweep(args)
        print()
        print(table(rows))
        print()
        print(loss_table(rows))
    print(f"\ntotal wall {time.perf_counter() - t0:.0f} s, load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
