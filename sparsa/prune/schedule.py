"""Adaptive iterative pruning driven by an accuracy tolerance (docs/algorithms.md §3).

    from sparsa.prune.schedule import tolerance_prune
    result = tolerance_prune(load("tiny-swin"), 0.02, "digits", "out/swin-2pct")

Round-robin over "slots", each with its own sparsity s[l] and step δ[l]:
  for each slot: try s[l] + δ[l] (optionally recover a few steps), check accuracy on the check
  split; within tolerance -> accept, δ[l] *= 1.5 (≤ δ_max); else roll the slot back, δ[l] /= 2.
  after the round: recover (fine-tune with KD from the dense model), check again; beyond
  tolerance -> roll the whole round back and halve every δ. Stop when a round accepts nothing,
  after max_rounds rounds or after budget_s seconds.

This module is the loop; its parts live beside it:
  sparsa.prune.schedule_config  ScheduleConfig: every option, its default and range check
  sparsa.prune.acceptance       "within tolerance": the paired accuracy-drop statistics and rule
  sparsa.prune.operators        the slots and trial steps (unstructured masks, structured units)
  sparsa.prune.checkpoint       <out>/.run: checkpoints, state.json, log.jsonl, resume
"""

from __future__ import annotations

import shutil
import time
from typing import Callable

import torch

from sparsa.errors import SparsaError
from sparsa.io import atomic_write_json, check_out_dir, clean_stale_inside, staged_folder
from sparsa.prune.acceptance import ACCEPT_RULES, Meter, accuracy_drop
from sparsa.prune.checkpoint import (STATE_VERSION, WORK_DIR, RunLog, RunState, commit, config_dict, load_ckpt,
                                     resumable, save_ckpt, saved_state)
from sparsa.prune.operators import StructuredOperator, UnstructuredOperator
from sparsa.prune.schedule_config import ScheduleConfig

__all__ = ["ACCEPT_RULES", "STATE_VERSION", "WORK_DIR", "ScheduleConfig", "StructuredOperator",
           "UnstructuredOperator", "accuracy_drop", "tolerance_prune"]


def tolerance_prune(loaded, tolerance: float, data, out, *, callback: Callable[[dict], None] | None = None,
                    progress: bool = True, console=None, overwrite: bool = False, return_model: bool = False,
                    **opts):
    """Prune `loaded` (a LoadedModel, not changed) as far as `tolerance` allows; see the module doc.

    `data`: a built-in name/path for `sparsa.data.load_dataset` (its check/report/train splits are
    loaded by name), a labelled Dataset (used for all three), or a dict of Datasets with the keys
    check, report and train. `out` ends as the pruned model's folder (reloadable with
    sparsa.models.load) holding result.json and log.jsonl; resumes from <out>/.run/state.json.
    `callback(entry)` sees every log entry (raise in it to stop the run). An unfinished run of
    the same configuration in `out` is resumed; anything else there is refused unless `overwrite`,
    which starts over in an emptied folder.

    Returns the result dict; with `return_model`, (result, the accepted LoadedModel): the model the
    folder holds, in memory (what `sparsa.models.load(out)` would rebuild, without reading it back).
    """
    from sparsa.prune.finetune import finetune

    cfg = ScheduleConfig.from_opts(tolerance, **opts)
    out = check_out_dir(out, overwrite=None)
    cfg.resolve_kinds(loaded)
    start_over = resumable(out, cfg, opts, overwrite)
    splits = _load_splits(data, cfg, loaded)
    check_ds, report_ds, train_ds = splits
    _check_classifier(loaded, check_ds)
    if start_over:  # only now: a call that fails on its input leaves the folder as it was
        with staged_folder(out, overwrite=True):
            pass
    work = out / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    clean_stale_inside(work)  # checkpoint folders a kill left half-built
    t_start = time.perf_counter()

    state_path = work / "state.json"
    resumed = state_path.is_file()
    if resumed:
        saved = saved_state(out, cfg, opts)
        st = RunState(**{k: v for k, v in saved.items() if k in RunState.__dataclass_fields__})
        from sparsa.models import load as load_model

        dense = load_model(work / "dense")
        lm, masks = load_ckpt(work, st.current)
    else:
        dense = loaded
        st = RunState()
        lm, masks = loaded.clone(), None
    op = UnstructuredOperator(dense) if cfg.granularity == "unstructured" else StructuredOperator(dense, cfg, train_ds.subset(64))
    if cfg.granularity == "unstructured" and masks is None:
        masks = op.masks_from(lm)
    meter = Meter(dense, check_ds, report_ds, op.slots if cfg.granularity == "unstructured" else None)
    log = RunLog(out / "log.jsonl", st.step if resumed else None, callback)
    say = _say(progress, console)
    recover_kw = dict(teacher=dense, lr=cfg.recovery_lr, batch_size=cfg.recovery_batch, kd=cfg.kd, masks=masks,
                      progress=progress, console=console)

    dense_correct = meter.correct(dense)
    if not resumed:
        dense.save(work / "dense", overwrite=True)
        st.a0 = float(dense_correct.float().mean())
        st.s = {s: 0.0 for s in op.slots}
        st.s_round_start = dict(st.s)
        st.delta = {s: cfg.delta0 for s in op.slots}
        st.current = st.round_start = "ckpt-0000"
        save_ckpt(work, st.current, lm, masks)
        commit(work, st, cfg)
        log({"event": "start", "step": 0, "check_accuracy": st.a0, **meter.size(lm, masks), "config": config_dict(cfg)})
    else:
        say(f"resuming {out} at round {st.round}, slot {st.slot_index}/{len(op.slots)} (step {st.step})")
        snapshot_lm, snapshot_masks = load_ckpt(work, st.round_start)

    elapsed0 = st.elapsed_s
    snapshot = (lm.clone(), _copy(masks)) if not resumed else (snapshot_lm, snapshot_masks)

    def checkpoint(round_start: bool = False):
        st.elapsed_s = elapsed0 + time.perf_counter() - t_start
        name = f"ckpt-{st.step:04d}"
        if name != st.current:
            save_ckpt(work, name, lm, masks)
        st.current = name
        if round_start:
            st.round_start = name
        commit(work, st, cfg)  # the commit point: state.json names the checkpoint

    while not st.done:
        if st.round > cfg.max_rounds:
            st.done, st.stop_reason = True, "max_rounds"
            break
        for i in range(st.slot_index, len(op.slots)):
            if cfg.budget_s is not None and elapsed0 + time.perf_counter() - t_start > cfg.budget_s:
                st.done, st.stop_reason = True, "budget"
                break
            slot = op.slots[i]
            st.slot_index = i + 1
            d, s = st.delta[slot], st.s[slot]
            if d < cfg.delta_min or s + d > cfg.s_max + 1e-9:
                continue
            st.step += 1
            s_new = round(s + d, 6)
            cand, undo = op.trial(lm, masks, slot, s_new)
            if cfg.trial_recovery_steps > 0:
                finetune(cand, train_ds, steps=cfg.trial_recovery_steps, seed=cfg.seed + st.step,
                         desc=f"recover {slot}", **{**recover_kw, "masks": masks})
            acc, v = meter.judge(dense_correct, cand, cfg)
            ok = v["ok"]
            entry = {"event": "trial", "step": st.step, "round": st.round, "slot": slot, "rate": s_new,
                     "delta": d, "check_accuracy": acc, "accuracy_loss": st.a0 - acc, "loss_upper": v["upper"],
                     "discordant": [v["b"], v["c"]], "accepted": ok, **meter.size(cand, masks)}
            if ok or not cfg.rollback:
                lm = cand
                st.s[slot] = s_new
                st.delta[slot] = min(1.5 * d, cfg.delta_max)
                st.accepted_in_round += 1
                if not ok:  # rollback=False: the first state beyond tolerance is the result
                    st.done, st.stop_reason = True, "tolerance_exceeded"
            else:
                if undo:
                    undo()
                st.delta[slot] = d / 2
            log(entry)
            if ok or not cfg.rollback:
                checkpoint()
            if st.done:
                break
            say(f"round {st.round} {slot}: rate {s_new:.3f} acc {acc:.4f} {'accepted' if ok else 'rolled back'}")
        if st.done:
            break
        # end of round: recover, check, maybe roll the round back
        if st.accepted_in_round and cfg.round_recovery_epochs > 0:
            rep = finetune(lm, train_ds, epochs=cfg.round_recovery_epochs, seed=cfg.seed + 7919 * st.round,
                           desc=f"round {st.round} recovery", **{**recover_kw, "masks": masks})
        else:
            rep = None
        acc, v = meter.judge(dense_correct, lm, cfg)
        ok = v["ok"]
        accepted = st.accepted_in_round
        if not ok and cfg.rollback:
            lm, masks = snapshot[0].clone(), _copy(snapshot[1])
            recover_kw["masks"] = masks
            for k in st.delta:
                st.delta[k] /= 2
            st.s = dict(st.s_round_start)
        st.step += 1
        log({"event": "round", "step": st.step, "round": st.round, "accepted_trials": accepted,
             "check_accuracy": acc, "accuracy_loss": st.a0 - acc, "loss_upper": v["upper"],
             "discordant": [v["b"], v["c"]], "rolled_back": not ok and cfg.rollback,
             "recovery": rep, **meter.size(lm, masks)})
        if not ok and not cfg.rollback:
            st.done, st.stop_reason = True, "tolerance_exceeded"
        elif accepted == 0:
            st.done, st.stop_reason = True, "converged"
        st.round += 1
        st.slot_index = 0
        st.accepted_in_round = 0
        st.s_round_start = dict(st.s)
        checkpoint(round_start=True)
        snapshot = (lm.clone(), _copy(masks))
    checkpoint()
    result = _finish(out, dense, lm, masks, st, cfg, meter, say, dense_correct)
    if not return_model:
        return result
    lm.data_size = dict(loaded.data_size)  # how data is prepared for it: the caller's, never saved
    return result, lm


def _copy(masks):
    return None if masks is None else {k: v.clone() for k, v in masks.items()}


def _finish(out, dense, lm, masks, st, cfg, meter, say, dense_correct) -> dict:
    size0 = meter.size(dense, None)
    size = meter.size(lm, masks)
    final_check, verdict = meter.judge(dense_correct, lm, cfg)
    dense_check = st.a0
    dense_test, final_test = meter.acc(dense, "report"), meter.acc(lm, "report")
    lm.record.setdefault("stages", []).append({"stage": "tolerance_prune", "config": config_dict(cfg),
                                               "sparsity": st.s, "stop_reason": st.stop_reason})
    _settle(lm)
    result = {
        "stage": "tolerance_prune", "config": config_dict(cfg), "granularity": cfg.granularity, "scope": cfg.scope, "kinds": list(cfg.kinds),
        "tolerance": cfg.tolerance, "rollback": cfg.rollback, "stop_reason": st.stop_reason,
        "rounds": st.round - 1, "trials": st.step,
        "dense_check_accuracy": dense_check, "check_accuracy": final_check,
        "dense_accuracy": dense_test, "accuracy": final_test, "accuracy_loss": dense_test - final_test,
        "params_dense": size0["params"], "params": size["params"], "nonzero_params": size["nonzero_params"],
        "compression": size["compression"], "macs_dense": size0["macs"], "macs": size["macs"],
        "check_split": cfg.check_split, "report_split": cfg.report_split, "accept": cfg.accept,
        "confidence": cfg.confidence, "check_loss_upper": verdict["upper"],
        "elapsed_s": round(st.elapsed_s, 1), "log": "log.jsonl",
    }
    from sparsa.models.store import RESULT_FILE, write_model_files

    # the model folder replaces the working folder in one step: a kill leaves the run (resumable) or the result
    with staged_folder(out, overwrite=True) as d:
        write_model_files(lm, d)
        shutil.copyfile(out / "log.jsonl", d / "log.jsonl")
        atomic_write_json(d / RESULT_FILE, result)
    result = {**result, "model": str(out), "log": str(out / "log.jsonl")}
    say(f"done ({st.stop_reason}): compression {size['compression']:.3f}, "
        f"accuracy {final_test:.4f} (dense {dense_test:.4f})")
    return result


def _settle(lm) -> None:
    """The accepted model as a saved one reloads: eval mode, no gradients left from the recovery fine-tuning
    (masks are applied to the weights, never hooked, so the weights are all there is)."""
    lm.model.eval()
    for p in lm.model.parameters():
        p.grad = None


def _load_splits(data, cfg, lm=None):
    from sparsa.data import load_dataset

    if data is None:
        raise SparsaError("tolerance pruning needs a labelled data set to measure accuracy",
                          hint="pass --data digits (images), clips (video) or a folder of class_name/*.png")
    if hasattr(data, "kind"):  # a Dataset: use it for every role (the caller chose)
        ds = [data, data, data]
    elif isinstance(data, dict):  # one Dataset per role
        missing = {"check", "report", "train"} - set(data)
        if missing:
            raise SparsaError(f"the data mapping lacks {sorted(missing)}",
                              hint="give {'check': ds, 'report': ds, 'train': ds} (labelled Datasets)")
        ds = [data["check"], data["report"], data["train"]]
    else:
        ds = [load_dataset(data, s, seed=cfg.seed, model=lm) for s in (cfg.check_split, cfg.report_split, "train")]
    if ds[0].kind == "text":
        raise SparsaError(f"{getattr(ds[0], 'name', data)} is a text set without labels; tolerance pruning measures "
                          "top-1 accuracy", hint="use a labelled set (digits, clips, an image folder)")
    return ds


def _check_classifier(lm, ds) -> None:
    """The model must map the data's inputs to one logit per class."""
    from sparsa.prune.finetune import input_name

    no_head = SparsaError(f"this {lm.family} model has no classifier head, so its accuracy cannot be measured",
                          hint="tolerance pruning needs a classifier (e.g. tiny-vit, tiny-swin, tiny-videomae); "
                               "for embedding models use `sparsa prune --heads/--ffn` and fidelity")
    if lm.modality != ds.kind:
        raise SparsaError(f"a {lm.modality} model cannot be evaluated on {ds.kind} data ({ds.name})",
                          hint={"image": "use --data digits or an image folder", "video": "use --data clips",
                                "text": "text models have no accuracy here"}.get(lm.modality, "match model and data"))
    try:
        with torch.no_grad():
            out = lm.model(**{input_name(lm): ds.x[:2]})
    except TypeError:
        raise no_head from None
    logits = getattr(out, "logits", out if isinstance(out, torch.Tensor) else None)
    if logits is None or logits.dim() != 2:
        raise no_head
    if logits.shape[-1] != ds.num_classes:
        raise SparsaError(f"the model predicts {logits.shape[-1]} classes but the data set has {ds.num_classes}",
                          hint="use the data set the model was trained on")


def _say(progress: bool, console):
    if not progress:
        return lambda msg: None
    from rich.console import Console

    c = console or Console(stderr=True)
    return lambda msg: c.log(msg)
