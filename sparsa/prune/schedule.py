"""Adaptive iterative pruning driven by an accuracy tolerance (docs/algorithms.md §3).

    from sparsa.prune.schedule import tolerance_prune
    result = tolerance_prune(load("tiny-swin"), 0.02, "digits", "out/swin-2pct")

Round-robin over "slots", each with its own sparsity s[l] and step δ[l]:
  for each slot: try s[l] + δ[l] (optionally recover a few steps), check accuracy on the check
  split; within tolerance -> accept, δ[l] *= 1.5 (≤ δ_max); else roll the slot back, δ[l] /= 2.
  after the round: recover (fine-tune with KD from the dense model), check again; beyond
  tolerance -> roll the whole round back and halve every δ. Stop when a round accepts nothing,
  after rounds_max rounds or after budget_s seconds.

"Within tolerance" (`accept`):
  "upper_bound"   (default) the one-sided `confidence` upper bound of the accuracy drop must be
                  ≤ tolerance. The drop is paired: dense and pruned model on the same check images,
                  drop = (b - c)/n with b = images only the dense model gets right, c = images only
                  the pruned one gets right; its standard error comes from the discordant pairs,
                  SE = sqrt((b + c - n·drop²) / (n - 1)) / sqrt(n), bound = drop + z·SE.
  "point"         the seed's rule: the measured drop itself must be ≤ tolerance.
CHOICE: upper_bound at 95%. Reason: a run makes hundreds of accept/reject decisions on the same
small check split, so the point rule keeps the states that happened to score well on it; on
tiny-swin/digits (180 check images) its test-split loss overshot every tolerance by 1.3–2.8 points.
With the bound and logit-KD recovery the test loss stayed within 5 / 2 / 1% (BENCHMARKS.md).

Granularity:
  "unstructured"  the seed's rule: magnitude masks on every attention/MLP Linear weight, one slot
                  per Linear (the defaults of docs/algorithms.md §3: δ0 0.05, fine-tune 1 epoch at lr 1e-5, masks fixed)
  "structured"    removes whole units with sparsa.prune (heads / FFN neurons / conv channels):
                  scope "layer" = one slot per group (per-layer sensitivity), "global" = one slot
                  per unit kind ranked across layers.

`out` becomes the pruned model's folder (like every command's --out). While the run works, every
trial and round is appended to <out>/log.jsonl (rate, params, MACs, accuracy), and its working
state lives in <out>/.run: after every accepted step the model is checkpointed (.run/ckpt-NNNN, each
folder written whole, committed by an atomic write of .run/state.json). Running again with the same
`out` resumes from the last accepted step. At the end the model folder (with result.json and
log.jsonl, without .run) replaces <out> in one step; a finished run, like a run with another
configuration or a folder of something else, is only replaced with `overwrite=True` (`--overwrite`).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch

from sparsa.errors import SparsaError
from sparsa.io import (OVERWRITE_HINT, atomic_save_safetensors, atomic_write_json, check_out_dir, clean_stale_inside,
                       is_leftover, staged_folder)

STATE_VERSION = 1
WORK_DIR = ".run"  # the working state inside the output folder until the run is finished
ACCEPT_RULES = ("upper_bound", "point")
# options added after the first runs were written: a saved run without them used these values
_LEGACY_OPTS = {"accept": "point", "confidence": 0.95}


def accuracy_drop(dense_correct: torch.Tensor, correct: torch.Tensor, tolerance: float, *,
                  accept: str = "upper_bound", confidence: float = 0.95) -> dict:
    """Is the accuracy drop of a pruned model within `tolerance`? Paired comparison on the same
    images: `dense_correct` / `correct` are bool vectors (top-1 right per image).

    Returns {"drop", "se", "upper", "b", "c", "n", "ok"}: drop = (b - c)/n (b: only the dense
    model right, c: only the pruned one right), se from the discordant pairs, upper = drop +
    z(confidence)·se; ok compares `upper` ("upper_bound") or `drop` ("point") with the tolerance."""
    from statistics import NormalDist

    if accept not in ACCEPT_RULES:
        raise SparsaError(f"unknown accept rule {accept!r}", hint="use 'upper_bound' or 'point'")
    dense_correct, correct = dense_correct.bool().flatten(), correct.bool().flatten()
    if dense_correct.shape != correct.shape or dense_correct.numel() == 0:
        raise SparsaError(f"paired accuracy needs the same non-empty images for both models "
                          f"({dense_correct.numel()} vs {correct.numel()})", hint="score both on one check split")
    n = correct.numel()
    b = int((dense_correct & ~correct).sum())
    c = int((~dense_correct & correct).sum())
    drop = (b - c) / n
    var = max(0.0, (b + c - n * drop * drop) / (n - 1)) if n > 1 else 0.0
    se = math.sqrt(var / n)
    upper = drop + NormalDist().inv_cdf(confidence) * se
    value = upper if accept == "upper_bound" else drop
    return {"drop": drop, "se": se, "upper": upper, "b": b, "c": c, "n": n, "ok": value <= tolerance + 1e-12}


@dataclass
class ScheduleConfig:
    tolerance: float  # allowed accuracy drop, as a fraction (0.02 = 2 points)
    granularity: str = "structured"  # "structured" | "unstructured"
    kinds: tuple[str, ...] | None = None  # structured: unit kinds (None: heads+ffn, or channels for convs)
    scope: str = "layer"  # structured: "layer" (per-layer sensitivity) | "global"
    importance: str = "l1_group"
    delta0: float = 0.05
    delta_min: float = 0.005
    delta_max: float = 0.10
    s_max: float = 0.95
    rounds_max: int = 50
    budget_s: float | None = None  # wall-clock budget; stop (keeping the last accepted state) past it
    rollback: bool = True  # False: return the first state beyond tolerance (mimics the seed's Table 1)
    trial_recovery_steps: int = 0  # KD steps after each trial, before its check
    round_recovery_epochs: float = 1.0  # fine-tuning after each round
    recovery_lr: float | None = None  # None: 1e-5 unstructured (docs/algorithms.md §3), 1e-4 structured (KD)
    recovery_batch: int = 64
    kd: str = "logits"  # "none" | "logits" | "hidden" | "logits+hidden"
    check_split: str = "calib"
    report_split: str = "test"
    seed: int = 0
    accept: str = "upper_bound"  # "upper_bound" (paired one-sided confidence bound) | "point" (the seed's rule)
    confidence: float = 0.95  # one-sided level of the upper bound (accept="upper_bound")

    def __post_init__(self):
        t = float(self.tolerance)
        if not (0.0 < t < 1.0) or math.isnan(t):
            raise SparsaError(f"tolerance={self.tolerance} is out of range (0, 1)",
                              hint="give the allowed accuracy drop as a fraction, e.g. --tolerance 0.02 for 2 points")
        self.tolerance = t
        if self.granularity not in ("structured", "unstructured"):
            raise SparsaError(f"unknown granularity {self.granularity!r}", hint="use 'structured' or 'unstructured'")
        if self.scope not in ("layer", "global"):
            raise SparsaError(f"unknown scope {self.scope!r}", hint="use 'layer' or 'global'")
        if self.accept not in ACCEPT_RULES:
            raise SparsaError(f"unknown accept rule {self.accept!r}",
                              hint="use 'upper_bound' (confidence bound of the drop) or 'point' (the seed's rule)")
        if not (0.5 <= float(self.confidence) < 1.0):
            raise SparsaError(f"confidence={self.confidence} is out of range [0.5, 1)",
                              hint="give a one-sided level such as 0.95 (0.5 makes the bound the point estimate)")
        if self.recovery_lr is None:
            self.recovery_lr = 1e-5 if self.granularity == "unstructured" else 1e-4
        if self.kinds is None:
            return
        self.kinds = tuple(self.kinds)
        bad = set(self.kinds) - {"heads", "ffn", "channels"}
        if bad or not self.kinds:
            raise SparsaError(f"unknown unit kinds {sorted(bad) or '(none)'}", hint="choose from heads, ffn, channels")
    def check_steps(self):
        if not (0 < self.delta_min <= self.delta0 <= self.delta_max < 1) or not (0 < self.s_max < 1):
            raise SparsaError("schedule steps must satisfy 0 < delta_min <= delta0 <= delta_max < 1 and 0 < s_max < 1",
                              hint="e.g. delta0=0.05 delta_min=0.005 delta_max=0.1 s_max=0.95")

    @classmethod
    def from_opts(cls, tolerance: float, **opts) -> "ScheduleConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(opts) - names
        if unknown:
            raise SparsaError(f"unknown tolerance_prune option(s): {sorted(unknown)}",
                              hint=f"options: {', '.join(sorted(names - {'tolerance'}))}")
        cfg = cls(tolerance=tolerance, **opts)
        cfg.check_steps()
        return cfg

    def resolve_kinds(self, lm) -> None:
        if self.kinds is None:
            has = [k for k in ("heads", "ffn", "channels") if lm.adapter.groups(k)]
            self.kinds = tuple(k for k in has if k != "channels") or tuple(has) or ("heads", "ffn")


# ----------------------------------------------------------------------------- the pruning ops


class _Unstructured:
    """Magnitude masks on attention/MLP Linear weights; a slot = one Linear."""

    def __init__(self, lm):
        paths = []
        for g in lm.adapter.head_groups():
            paths += [g.q, g.k, g.v, g.o]
        for g in lm.adapter.ffn_groups():
            paths += [g.fc1, g.fc2]
        if not paths:
            raise SparsaError(f"this {lm.family} model has no attention/MLP Linear layers to prune",
                              hint="use granularity='structured' with kinds=('channels',) for conv models")
        self.slots = [f"{p}.weight" for p in paths]

    def masks_from(self, lm) -> dict[str, torch.Tensor]:
        return {s: (lm.model.get_parameter(s) != 0).float() for s in self.slots}

    @staticmethod
    def mask_for(w: torch.Tensor, sparsity: float) -> torch.Tensor:
        """Prune the round(s*n) smallest |w| (ties: lower flat index first)."""
        n = w.numel()
        k = int(round(sparsity * n))
        mask = torch.ones(n)
        if k > 0:
            order = torch.sort(w.detach().abs().flatten(), stable=True).indices[:k]
            mask[order] = 0.0
        return mask.view_as(w)

    def trial(self, lm, masks, slot, s_new):
        """Apply in place; return an undo closure."""
        p = lm.model.get_parameter(slot)
        old_w, old_m = p.detach().clone(), masks[slot]
        masks[slot] = self.mask_for(p, s_new)
        with torch.no_grad():
            p.mul_(masks[slot])

        def undo():
            with torch.no_grad():
                p.copy_(old_w)
            masks[slot] = old_m

        return lm, undo


class _Structured:
    """Whole units through sparsa.prune; a slot = one group (scope layer) or one kind (global)."""

    def __init__(self, lm, cfg: ScheduleConfig, importance_data):
        self.cfg = cfg
        self.data = importance_data
        self.orig = {k: {g.name: g.size for g in lm.adapter.groups(k)} for k in cfg.kinds}
        missing = [k for k in cfg.kinds if not self.orig[k]]
        if missing:
            raise SparsaError(f"this {lm.family} model has no prunable {missing[0]}",
                              hint=f"choose kinds among those it has: "
                                   f"{[k for k in ('heads', 'ffn', 'channels') if lm.adapter.groups(k)]}")
        if cfg.scope == "global":
            self.slots = list(cfg.kinds)
        else:
            self.slots = [f"{k}:{name}" for k in cfg.kinds for name in self.orig[k]]

    def trial(self, lm, masks, slot, s_new):
        from sparsa.prune import PrunePlan, n_keep, prune

        cur = {k: {g.name: g.size for g in lm.adapter.groups(k)} for k in self.cfg.kinds}
        if self.cfg.scope == "global":
            kind = slot
            total_orig, total_cur = sum(self.orig[kind].values()), sum(cur[kind].values())
            target = max(len(cur[kind]), n_keep(total_orig, s_new))
            rel = 1.0 - target / total_cur
            plan = PrunePlan(**{kind: max(0.0, min(rel, 0.999))}, importance=self.cfg.importance, scope="global",
                             seed=self.cfg.seed)
        else:
            kind, name = slot.split(":", 1)
            target = n_keep(self.orig[kind][name], s_new)
            from sparsa.prune import compute_importance

            g = next(g for g in lm.adapter.groups(kind) if g.name == name)
            scores = compute_importance(lm, self.cfg.importance, data=self.data, groups={kind: [g]},
                                        seed=self.cfg.seed)[kind][name]
            order = torch.sort(-scores.float(), stable=True).indices[: max(1, target)]
            plan = PrunePlan(keep={kind: {name: sorted(order.tolist())}}, importance=self.cfg.importance)
        return prune(lm, plan, data=self.data), None


# ----------------------------------------------------------------------------- run state


@dataclass
class _State:
    round: int = 1
    slot_index: int = 0  # next slot to try in this round
    accepted_in_round: int = 0
    step: int = 0  # trials so far (log entries carry it)
    s: dict = field(default_factory=dict)
    s_round_start: dict = field(default_factory=dict)
    delta: dict = field(default_factory=dict)
    a0: float = 0.0
    current: str = ""  # checkpoint folder names
    round_start: str = ""
    done: bool = False
    stop_reason: str = ""
    elapsed_s: float = 0.0


def _save_ckpt(out: Path, name: str, lm, masks) -> None:
    from sparsa.models.store import write_model_files

    with staged_folder(out / name, overwrite=True) as d:  # model and masks appear together
        write_model_files(lm, d)
        if masks:
            atomic_save_safetensors(d / "masks.safetensors", masks)


def _load_ckpt(out: Path, name: str):
    from safetensors.torch import load_file

    from sparsa.models import load

    d = out / name
    lm = load(d)
    masks = load_file(str(d / "masks.safetensors")) if (d / "masks.safetensors").is_file() else None
    return lm, masks


def _commit(out: Path, st: _State, cfg: ScheduleConfig) -> None:
    atomic_write_json(out / "state.json", {"version": STATE_VERSION, "config": _cfg_dict(cfg), **asdict(st)})
    keep = {st.current, st.round_start}
    for d in out.glob("ckpt-*"):
        if d.name not in keep:
            shutil.rmtree(d, ignore_errors=True)


def _cfg_dict(cfg: ScheduleConfig) -> dict:
    d = asdict(cfg)
    d["kinds"] = list(cfg.kinds or ())
    return d


class _Log:
    """Append-only JSONL; on resume, entries after the last committed step are dropped."""

    def __init__(self, path: Path, resume_step: int | None, callback):
        self.path = path
        self.callback = callback
        if resume_step is None:
            path.write_text("")
        else:
            keep = []
            for line in path.read_text().splitlines() if path.exists() else []:
                try:
                    e = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the line a crash cut short
                if e.get("step", 0) <= resume_step:
                    keep.append(line)
            path.write_text("".join(l + "\n" for l in keep))

    def __call__(self, entry: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(entry, default=float) + "\n")
            f.flush()
        if self.callback:
            self.callback(entry)


# ----------------------------------------------------------------------------- measurements


class _Meter:
    def __init__(self, dense, check, report, unstructured_slots):
        from sparsa.metrics import count_macs, count_params

        self.check, self.report = check, report
        self.inputs = dense.example_inputs(batch=1)
        self.params0 = count_params(dense.model)
        self.macs0 = count_macs(dense.model, self.inputs)
        self.slot_macs = _linear_macs(dense.model, self.inputs, unstructured_slots) if unstructured_slots else {}

    def acc(self, lm, which="check") -> float:
        from sparsa.metrics import accuracy

        return accuracy(lm, self.check if which == "check" else self.report)

    def correct(self, lm) -> torch.Tensor:
        """Per check image: is the model's top-1 right?"""
        from sparsa.metrics.quality import predict_logits

        with torch.no_grad():
            return predict_logits(lm, self.check.x).argmax(-1) == self.check.y

    def judge(self, dense_correct, lm, cfg) -> tuple[float, dict]:
        """(check accuracy, accuracy_drop verdict) of `lm` against the dense model."""
        corr = self.correct(lm)
        v = accuracy_drop(dense_correct, corr, cfg.tolerance, accept=cfg.accept, confidence=cfg.confidence)
        return float(corr.float().mean()), v

    def size(self, lm, masks) -> dict:
        from sparsa.metrics import count_macs, count_params

        params = count_params(lm.model)
        macs = count_macs(lm.model, self.inputs) if not masks else self.macs0
        zeros = 0
        if masks:
            for slot, m in masks.items():
                z = int((m == 0).sum())
                zeros += z
                macs -= self.slot_macs.get(slot, 0) * z / m.numel()
        nonzero = params - zeros
        return {"params": params, "nonzero_params": nonzero, "macs": int(macs),
                "compression": 1.0 - nonzero / self.params0}


def _linear_macs(model, inputs, slots) -> dict[str, int]:
    """MACs of each Linear (by weight path) at the example input (tokens x in x out)."""
    out, hooks = {}, []
    for slot in slots:
        mod = model.get_submodule(slot.rsplit(".", 1)[0])

        def hook(m, args, res, slot=slot):
            out[slot] = res.numel() // res.shape[-1] * m.in_features * m.out_features

        hooks.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for h in hooks:
            h.remove()
    return out


# ----------------------------------------------------------------------------- the loop


def tolerance_prune(loaded, tolerance: float, data, out, *, callback: Callable[[dict], None] | None = None,
                    progress: bool = True, console=None, overwrite: bool = False, **opts) -> dict:
    """Prune `loaded` (a LoadedModel, not changed) as far as `tolerance` allows; see the module doc.

    `data`: a built-in name/path for `sparsa.data.load_dataset` (its check/report/train splits are
    loaded by name), a labelled Dataset (used for all three), or a dict of Datasets with the keys
    check, report and train. `out` ends as the pruned model's folder (reloadable with
    sparsa.models.load) holding result.json and log.jsonl; resumes from <out>/.run/state.json.
    `callback(entry)` sees every log entry (raise in it to stop the run). An unfinished run of
    the same configuration in `out` is resumed; anything else there is refused unless `overwrite`,
    which starts over in an emptied folder.
    """
    from sparsa.prune.finetune import finetune

    cfg = ScheduleConfig.from_opts(tolerance, **opts)
    out = check_out_dir(out, overwrite=None)
    cfg.resolve_kinds(loaded)
    start_over = _resumable(out, cfg, opts, overwrite)
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
        saved = _saved_state(out, cfg, opts)
        st = _State(**{k: v for k, v in saved.items() if k in _State.__dataclass_fields__})
        from sparsa.models import load as load_model

        dense = load_model(work / "dense")
        lm, masks = _load_ckpt(work, st.current)
    else:
        dense = loaded
        st = _State()
        lm, masks = loaded.clone(), None
    op = _Unstructured(dense) if cfg.granularity == "unstructured" else _Structured(dense, cfg, train_ds.subset(64))
    if cfg.granularity == "unstructured" and masks is None:
        masks = op.masks_from(lm)
    meter = _Meter(dense, check_ds, report_ds, op.slots if cfg.granularity == "unstructured" else None)
    log = _Log(out / "log.jsonl", st.step if resumed else None, callback)
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
        _save_ckpt(work, st.current, lm, masks)
        _commit(work, st, cfg)
        log({"event": "start", "step": 0, "check_accuracy": st.a0, **meter.size(lm, masks), "config": _cfg_dict(cfg)})
    else:
        say(f"resuming {out} at round {st.round}, slot {st.slot_index}/{len(op.slots)} (step {st.step})")
        snapshot_lm, snapshot_masks = _load_ckpt(work, st.round_start)

    elapsed0 = st.elapsed_s
    snapshot = (lm.clone(), _copy(masks)) if not resumed else (snapshot_lm, snapshot_masks)

    def checkpoint(round_start: bool = False):
        st.elapsed_s = elapsed0 + time.perf_counter() - t_start
        name = f"ckpt-{st.step:04d}"
        if name != st.current:
            _save_ckpt(work, name, lm, masks)
        st.current = name
        if round_start:
            st.round_start = name
        _commit(work, st, cfg)  # the commit point: state.json names the checkpoint

    while not st.done:
        if st.round > cfg.rounds_max:
            st.done, st.stop_reason = True, "rounds_max"
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
    return _finish(out, dense, lm, masks, st, cfg, meter, say, dense_correct)


# what a run leaves in its folder before its first commit (.run/state.json)
_RUN_FILES = (WORK_DIR, "log.jsonl")


def _resumable(out: Path, cfg: ScheduleConfig, opts: dict, overwrite: bool) -> bool:
    """Check what `out` holds before any work; True: empty it and start over."""
    if not out.is_dir() or not any(out.iterdir()):
        return False
    if overwrite:
        return True
    if (out / WORK_DIR / "state.json").is_file():
        _saved_state(out, cfg, opts)  # refuses another configuration
        return False
    finished = _finished_config(out)
    if finished is not None:
        _same_config(finished, cfg, opts, out)  # refuses another configuration
        raise SparsaError(f"{out} holds a finished tolerance-pruning run", hint=OVERWRITE_HINT)
    if (out / "state.json").is_file():
        raise SparsaError(f"{out} holds a tolerance-pruning run in the older layout (state.json at the top, the "
                          f"model in {out / 'model'})", hint="its model loads from model/; pass --overwrite to run "
                          "again in the current layout (the folder is the model), or choose another --out")
    started = all(p.name in _RUN_FILES or is_leftover(p.name) for p in out.iterdir())
    if started:  # a run killed before its first commit
        return True
    raise SparsaError(f"the output folder {out} already exists and is not empty (and holds no tolerance-pruning run)",
                      hint=OVERWRITE_HINT)


def _finished_config(out: Path) -> dict | None:
    """The configuration a finished run recorded in its model folder's result.json, else None."""
    from sparsa.models.store import RESULT_FILE

    if not ((out / RESULT_FILE).is_file() and (out / "sparsa.json").is_file()):
        return None
    try:
        res = json.loads((out / RESULT_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    cfg = res.get("config") if isinstance(res, dict) and res.get("stage") == "tolerance_prune" else None
    return cfg if isinstance(cfg, dict) else None


def _saved_state(out: Path, cfg: ScheduleConfig, opts: dict) -> dict:
    """.run/state.json of the run in `out`, if it has `cfg`'s configuration (which it may update for
    options the saved run predates)."""
    path = out / WORK_DIR / "state.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SparsaError(f"{path} is corrupt: {e}", hint=OVERWRITE_HINT) from e
    saved["config"] = _same_config(saved.get("config"), cfg, opts, out)
    return saved


def _same_config(saved: dict | None, cfg: ScheduleConfig, opts: dict, out: Path) -> dict:
    """Refuse a saved configuration other than `cfg`'s; returns it completed with legacy defaults."""
    saved_cfg = dict(saved or {})
    for k, legacy in _LEGACY_OPTS.items():  # a run saved before option k existed keeps its rule
        if k not in saved_cfg:
            saved_cfg[k] = legacy
            if getattr(cfg, k) == getattr(ScheduleConfig, k) and k not in opts:
                setattr(cfg, k, legacy)
    if saved_cfg != _cfg_dict(cfg):
        raise SparsaError(f"{out} holds a run with a different configuration",
                          hint="use a new --out folder, or pass --overwrite to start over (the run there is deleted)")
    return saved_cfg


def _copy(masks):
    return None if masks is None else {k: v.clone() for k, v in masks.items()}


def _finish(out, dense, lm, masks, st, cfg, meter, say, dense_correct) -> dict:
    size0 = meter.size(dense, None)
    size = meter.size(lm, masks)
    final_check, verdict = meter.judge(dense_correct, lm, cfg)
    dense_check = st.a0
    dense_test, final_test = meter.acc(dense, "report"), meter.acc(lm, "report")
    lm.record.setdefault("stages", []).append({"stage": "tolerance_prune", "config": _cfg_dict(cfg),
                                               "sparsity": st.s, "stop_reason": st.stop_reason})
    result = {
        "stage": "tolerance_prune", "config": _cfg_dict(cfg), "granularity": cfg.granularity, "scope": cfg.scope, "kinds": list(cfg.kinds),
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
