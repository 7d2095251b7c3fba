"""Accuracy recovery for pruned models.

`lstsq_refit(pruned, dense, data)`: layer by layer, re-solve the output projection of every
pruned block (attention output dense, FFN output dense) by ridge least squares so that the
pruned model's residual stream reproduces the dense one on calibration activations. Closed
form, seconds to a few minutes on CPU, no labels. It targets `dense_out(x_dense) + r_dense -
r_pruned` (r = the residual input of the block), so each refit also compensates the error that
earlier layers left in the residual stream.

`distill(pruned, dense, data, steps)`: knowledge distillation (sparsa.prune.finetune), with
evaluation hooks for a recovery curve.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch import nn

from sparsa.errors import SparsaError
from sparsa.prune.calib import calib_batches


class _Stop(Exception):
    pass


def _capture(model: nn.Module, path: str, stop: bool):
    """Hook the Linear at `path`: record its input, its output and the residual input of its
    parent block (BERT-style `forward(hidden_states, input_tensor)`), then optionally stop."""
    lin = model.get_submodule(path)
    parent = model.get_submodule(path.rsplit(".", 1)[0]) if "." in path else None
    rec: dict = {}
    hooks = []

    def pre_parent(mod, args, kwargs):
        res = args[1] if len(args) > 1 else kwargs.get("input_tensor")
        rec["residual"] = res

    def fwd_lin(mod, args, out):
        rec["x"], rec["y"] = args[0], out
        if stop and parent is None:
            raise _Stop

    def fwd_parent(mod, args, kwargs, out):
        if stop:
            raise _Stop

    hooks.append(lin.register_forward_hook(fwd_lin))
    if parent is not None:
        hooks.append(parent.register_forward_pre_hook(pre_parent, with_kwargs=True))
        hooks.append(parent.register_forward_hook(fwd_parent, with_kwargs=True))
    return rec, hooks


def _run(model, inputs):
    try:
        with torch.no_grad():
            model(**inputs)
    except _Stop:
        pass


def lstsq_refit(pruned, dense, data=None, *, n_samples: int = 512, batch_size: int = 32, seq_len: int = 128,
                ridge: float = 1e-2, compensate: bool = True, kinds: tuple[str, ...] = ("heads", "ffn"),
                progress: Callable[[str], None] | None = None, budget_macs: float | None = None) -> dict:
    """Refit the output projections of `pruned` (a LoadedModel, changed in place) against `dense`.

    `data`: calibration data (texts / Dataset / tensor; default: the modality's built-in calib
    split). `ridge`: Tikhonov weight relative to the mean diagonal of XᵀX. `budget_macs`: at most
    this many multiply-adds of work (`sparsa.prune.refit_budget`): only the first of the `n_samples`
    samples that fit are used (the "budget" entry says how many). Returns per-layer relative
    reconstruction errors before and after."""
    pg = {"heads": pruned.adapter.head_groups(), "ffn": pruned.adapter.ffn_groups()}
    dg = {"heads": {g.name: g for g in dense.adapter.head_groups()}, "ffn": {g.name: g for g in dense.adapter.ffn_groups()}}
    jobs = []  # (pruned Linear path, dense Linear path) in forward order
    for hp, fp in zip(pg["heads"], pg["ffn"]):
        if "heads" in kinds and hp.name in dg["heads"]:
            jobs.append(hp.o)
        if "ffn" in kinds and fp.name in dg["ffn"]:
            jobs.append(fp.fc2)
    if not jobs:
        raise SparsaError("nothing to refit: the model has no attention/FFN output projections",
                          hint="lstsq_refit works on transformer models (heads/FFN)")
    batches = list(calib_batches(dense, data, n=n_samples, batch_size=batch_size, seq_len=seq_len))
    budget = None
    if budget_macs is not None:
        batches, budget = _within_budget(pruned.model, dense.model, jobs, batches, budget_macs)
        if progress:
            progress(f"refit: {budget['samples']} of {budget['samples_available']} samples fit its budget of "
                     f"{budget_macs / 1e12:g} T multiply-adds ({budget['macs_per_token'] / 1e9:.2f} G per token)")
    t0 = time.perf_counter()
    report = []
    for i, path in enumerate(jobs):
        lin = pruned.model.get_submodule(path)
        d_in, d_out = lin.in_features, lin.out_features
        xtx = torch.zeros(d_in + 1, d_in + 1, dtype=torch.float64)
        xty = torch.zeros(d_in + 1, d_out, dtype=torch.float64)
        err_before = torch.zeros((), dtype=torch.float64)
        norm = torch.zeros((), dtype=torch.float64)
        for inputs, _, mask in batches:
            rp, hp = _capture(pruned.model, path, stop=True)
            rd, hd = _capture(dense.model, path, stop=True)
            try:
                _run(pruned.model, inputs)
                _run(dense.model, inputs)
            finally:
                for h in hp + hd:
                    h.remove()
            target = rd["y"]
            # BERT-style blocks pass the residual as a second input; elsewhere (DistilBERT, ViT) the
            # second input, if any, is not a residual (a mask, ...): compensate only with a tensor of y's shape
            res_p, res_d = rp.get("residual"), rd.get("residual")
            if (compensate and isinstance(res_p, torch.Tensor) and isinstance(res_d, torch.Tensor)
                    and res_p.shape == rp["y"].shape == res_d.shape):
                target = target + res_d - res_p
            x, y = rp["x"], target
            sel = mask.bool().reshape(-1) if mask is not None else slice(None)
            x = x.reshape(-1, d_in)[sel].double()
            y = y.reshape(-1, d_out)[sel].double()
            x1 = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], 1)
            xtx += x1.T @ x1
            xty += x1.T @ y
            err_before += ((rp["y"].reshape(-1, d_out)[sel].double() - y) ** 2).sum()
            norm += (y ** 2).sum()
        lam = ridge * xtx.diagonal()[:-1].mean()
        reg = torch.eye(d_in + 1, dtype=torch.float64) * lam
        reg[-1, -1] = 0.0  # never shrink the bias
        sol = torch.linalg.solve(xtx + reg, xty)  # [(d_in+1), d_out]
        w, b = sol[:-1].T, sol[-1]
        # residual of the solution from the normal equations (no second pass needed)
        yty = norm
        err_after = yty - 2 * (sol * xty).sum() + (sol * (xtx @ sol)).sum()
        with torch.no_grad():
            lin.weight.copy_(w.to(lin.weight.dtype))
            if lin.bias is None:
                lin.bias = nn.Parameter(b.to(lin.weight.dtype))
            else:
                lin.bias.copy_(b.to(lin.bias.dtype))
        rel_b = float(err_before / norm.clamp(min=1e-30))
        rel_a = float(err_after.clamp(min=0) / norm.clamp(min=1e-30))
        report.append({"layer": path, "rel_err_before": rel_b, "rel_err_after": rel_a})
        if progress:
            progress(f"refit {i + 1}/{len(jobs)} {path}: relative error {rel_b:.4f} -> {rel_a:.4f}")
    used = n_samples if budget is None else budget["samples"]
    rec = {"stage": "lstsq_refit", "layers": len(report), "n_samples": used, "ridge": ridge, "compensate": compensate}
    out = {"layers": report, "seconds": round(time.perf_counter() - t0, 2), "n_samples": used}
    if budget is not None:
        rec["budget"] = out["budget"] = budget
    pruned.record.setdefault("stages", []).append(rec)
    return out


def _tokens_per_sample(model: nn.Module, path: str, inputs: dict) -> int:
    """Rows the Linear at `path` sees for the batch's first sample (text: the padded length; images,
    clips: patches / tubelets), by a forward of that sample stopped there."""
    rec, hooks = _capture(model, path, stop=True)
    try:
        _run(model, {n: v[:1] for n, v in inputs.items()})
    finally:
        for h in hooks:
            h.remove()
    x = rec["x"]
    return int(x.reshape(-1, x.shape[-1]).shape[0])


def _within_budget(pruned: nn.Module, dense: nn.Module, jobs: list[str], batches: list, budget_macs: float):
    """The leading calibration samples whose refit costs at most `budget_macs` (at least
    `refit_budget.MIN_SAMPLES`), and what was decided (JSON-able)."""
    from sparsa.prune import refit_budget as rb

    per_token = rb.macs_per_token(pruned, dense, jobs)
    available = sum(rb.batch_size_of(b[0]) or 0 for b in batches)
    if any(rb.batch_size_of(b[0]) is None for b in batches):  # inputs that cannot be cut per sample: all of them
        kept, used, spent = batches, available, None
    else:
        kept, used, spent = [], 0, 0
        for b in batches:
            bs = rb.batch_size_of(b[0])
            per_sample = _tokens_per_sample(pruned, jobs[0], b[0]) * per_token
            k = min(bs, max(int((budget_macs - spent) // per_sample), rb.MIN_SAMPLES - used))
            if k <= 0:
                break
            kept.append(b if k == bs else rb.slice_batch(b, k))
            used, spent = used + k, spent + k * per_sample
            if k < bs:
                break
    return kept, {"budget_macs": budget_macs, "macs_per_token": per_token, "macs": spent,
                  "samples_available": available, "samples": used}


def distill(pruned, dense, data, *, steps: int, eval_every: int | None = None,
            evaluate: Callable[[object], float] | None = None, **finetune_kw) -> dict:
    """Distil `dense` into `pruned` (in place) for `steps` steps (one LR schedule); with
    `evaluate(lm) -> float` and `eval_every`, also return the recovery curve [(step, metric)].

    `curve_detail` gives each point's training CPU seconds (process CPU, evaluations excluded)
    and wall seconds; `cpu_budget_s` (passed on to finetune) ends the run on CPU time."""
    from sparsa.prune.finetune import finetune

    curve, detail = [], []
    clock = {"eval_cpu": 0.0, "c0": time.process_time(), "t0": time.perf_counter()}

    def point(step: int) -> None:
        c = time.process_time()
        kd_cpu = c - clock["c0"] - clock["eval_cpu"]
        wall = time.perf_counter() - clock["t0"]
        was_training = pruned.model.training
        pruned.model.eval()
        value = evaluate(pruned)
        if was_training:
            pruned.model.train()
        clock["eval_cpu"] += time.process_time() - c
        curve.append((step, value))
        detail.append({"step": step, "metric": value, "kd_cpu_s": round(kd_cpu, 1), "wall_s": round(wall, 1)})

    if evaluate is not None:
        point(0)
    done = {"steps": 0}

    def on_step(step: int, loss: float) -> None:
        done["steps"] = step + 1
        if evaluate is not None and eval_every and (step + 1) % eval_every == 0 and step + 1 < steps:
            point(step + 1)

    rep = finetune(pruned, data, teacher=dense, steps=steps, on_step=on_step, **finetune_kw)
    if evaluate is not None and (not curve or curve[-1][0] != rep["steps"]):
        point(rep["steps"])
    return {**rep, "curve": curve, "curve_detail": detail}
