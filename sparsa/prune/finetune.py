"""Recovery after pruning: fine-tuning with knowledge distillation from the dense model.

One loop for every modality:
  labelled sets (image/video): loss = (1-alpha)*CE(labels) + alpha*T^2*KL(teacher/T || student/T)
                               [+ hidden_weight * mean MSE of hidden states]
  text sets (no labels):       loss = (1 - cos(mean-pooled student, teacher embedding))
                               [+ hidden_weight * mean MSE of hidden states]
Masks (unstructured pruning) are re-applied after every optimizer step, so pruned weights stay
exactly 0. A rich progress bar shows steps and loss (stderr; off with progress=False).
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch
import torch.nn.functional as F

from sparsa.errors import SparsaError

KD_MODES = ("none", "logits", "hidden", "logits+hidden")


def input_name(lm) -> str:
    f = getattr(lm.adapter, "input_name", None)
    return f() if f else "pixel_values"


def apply_masks(model: torch.nn.Module, masks: dict[str, torch.Tensor] | None) -> None:
    if not masks:
        return
    with torch.no_grad():
        for path, m in masks.items():
            model.get_parameter(path).mul_(m)


# float attributes HF attention modules read their attention-dropout probability from
_ATTN_DROPOUT_ATTRS = ("attention_dropout", "dropout_prob")


def _dropout_off(model: torch.nn.Module) -> list[tuple]:
    """Set every dropout probability of `model` to 0; return (module, attribute, old value)."""
    old = []
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            old.append((m, "p", m.p))  # BERT's attention reads its Dropout module's p
        old += [(m, a, getattr(m, a)) for a in _ATTN_DROPOUT_ATTRS if isinstance(getattr(m, a, None), float)]
    for m, attr, _ in old:
        setattr(m, attr, 0.0)
    return old


def _mean_pool(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp(min=1.0)


def _batches(lm, data, batch_size: int, seed: int, max_length: int):
    """Endless shuffled batches: (inputs dict, labels or None, attention mask or None)."""
    epoch = 0
    while True:
        if getattr(data, "kind", None) == "text" or isinstance(data, list):
            texts = data if isinstance(data, list) else data.texts
            order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
            for i in range(0, len(order), batch_size):
                enc = lm.tokenizer([texts[j] for j in order[i : i + batch_size]], padding=True, truncation=True,
                                   max_length=max_length, return_tensors="pt")
                yield dict(enc), None, enc["attention_mask"]
        else:
            name = input_name(lm)
            for xb, yb in data.batches(batch_size, shuffle=True, seed=seed + epoch):
                yield {name: xb}, yb, None
        epoch += 1


def finetune(
    student,
    data,
    *,
    teacher=None,
    steps: int | None = None,
    epochs: float | None = 1.0,
    lr: float = 1e-4,
    weight_decay: float = 0.05,
    batch_size: int = 64,
    kd: str = "logits",
    alpha: float = 0.9,
    temperature: float = 2.0,
    hidden_weight: float = 1.0,
    masks: dict[str, torch.Tensor] | None = None,
    max_length: int = 128,
    seed: int = 0,
    progress: bool = True,
    console=None,
    desc: str = "recover",
    on_step: Callable[[int, float], None] | None = None,
    cpu_budget_s: float | None = None,
    warmup_steps: int | None = None,
    freeze: tuple[str, ...] = (),
    dropout: bool = True,
) -> dict:
    """Fine-tune `student` (a LoadedModel, changed in place) on `data`; returns a small report.

    `steps` wins over `epochs`. `kd` chooses what is distilled from `teacher` (a LoadedModel):
    "logits" (classifiers), "hidden" (every hidden state), "logits+hidden", or "none" (labels
    only). Text data needs a teacher (there are no labels): its embedding is the target.

    `cpu_budget_s`: stop once this much process CPU time (all threads, `time.process_time`) has
    gone into training steps; `on_step` callbacks (e.g. evaluations) are not counted. The cosine
    LR schedule then follows whichever of steps or CPU time runs out first, so a budgeted run
    still ends at a low LR. `warmup_steps`: linear warm-up (default: a tenth of `steps`).
    `freeze`: parameter-name prefixes left untouched (e.g. ("embeddings.",)).
    `dropout=False`: train with the student's dropout off (probabilities restored afterwards).
    """
    if kd not in KD_MODES:
        raise SparsaError(f"unknown kd mode {kd!r}", hint=f"choose one of {', '.join(KD_MODES)}")
    text = getattr(data, "kind", None) == "text" or isinstance(data, list)
    if text and teacher is None:
        raise SparsaError("recovery on text needs the dense model as teacher (text sets have no labels)",
                          hint="pass teacher=<the dense LoadedModel>")
    if not text and getattr(data, "y", None) is None:
        raise SparsaError("recovery data has neither labels nor texts", hint="use a sparsa.data Dataset")
    if kd != "none" and teacher is None:
        kd = "none"
    n = len(data.texts if hasattr(data, "texts") and data.texts is not None else data) if not isinstance(data, list) else len(data)
    if steps is None:
        steps = max(1, math.ceil((epochs or 1.0) * n / batch_size))
    hidden = "hidden" in kd or (text and hidden_weight > 0 and kd != "logits")
    model = student.model
    if cpu_budget_s is not None and not cpu_budget_s > 0:
        raise SparsaError(f"cpu_budget_s={cpu_budget_s} must be positive", hint="give CPU seconds, e.g. 1200")
    params = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith(tuple(freeze))]
    if not params:
        raise SparsaError(f"freeze={freeze} leaves no parameter to train", hint="freeze fewer parameter prefixes")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warm = max(1, steps // 10 if warmup_steps is None else warmup_steps)
    cpu = {"used": 0.0}  # training CPU seconds so far (callbacks excluded)

    def progress_frac(s: int) -> float:
        p = s / steps
        if cpu_budget_s:
            p = max(p, cpu["used"] / cpu_budget_s)
        return min(1.0, p)

    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * progress_frac(s))))
    if teacher is not None:
        teacher.model.eval()
    model.train()
    dropped = [] if dropout else _dropout_off(model)
    apply_masks(model, masks)
    losses: list[float] = []
    t0 = time.perf_counter()
    c0 = time.process_time()
    stop = "steps"
    bar = _progress(progress, console)
    try:
        task = bar.add_task(desc, total=steps, loss=float("nan")) if bar else None
        for step, (inputs, labels, attn) in zip(range(steps), _batches(student, data, batch_size, seed, max_length)):
            out = model(**inputs, output_hidden_states=hidden)
            t_out = None
            if teacher is not None and (kd != "none" or text):
                with torch.no_grad():
                    t_out = teacher.model(**inputs, output_hidden_states=hidden)
            loss = _loss(out, t_out, labels, attn, kd, text, alpha, temperature, hidden_weight if hidden else 0.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            apply_masks(model, masks)
            losses.append(float(loss.detach()))
            cpu["used"] += time.process_time() - c0
            if bar:
                bar.update(task, advance=1, loss=losses[-1])
            if on_step:
                on_step(step, losses[-1])
            c0 = time.process_time()  # the callback's CPU is not training time
            if cpu_budget_s and cpu["used"] >= cpu_budget_s:
                stop = "cpu_budget"
                break
    finally:
        if bar:
            bar.stop()
        for m, attr, p in dropped:
            setattr(m, attr, p)
        model.eval()
    k = max(1, len(losses) // 10)
    return {"steps": len(losses), "lr": lr, "kd": kd, "batch_size": batch_size,
            "loss_first": sum(losses[:k]) / k if losses else None,
            "loss_last": sum(losses[-k:]) / k if losses else None,
            "seconds": round(time.perf_counter() - t0, 2), "cpu_s": round(cpu["used"], 2), "stop": stop}


def _loss(out, t_out, labels, attn, kd, text, alpha, temperature, hidden_weight) -> torch.Tensor:
    loss = torch.zeros(())
    if text:
        s = _mean_pool(out.last_hidden_state, attn)
        t = _mean_pool(t_out.last_hidden_state, attn)
        loss = loss + (1 - F.cosine_similarity(s, t, dim=-1)).mean()
    else:
        logits = out.logits
        ce = F.cross_entropy(logits, labels)
        if t_out is not None and "logits" in kd:
            T = temperature
            kl = F.kl_div(F.log_softmax(logits / T, -1), F.log_softmax(t_out.logits / T, -1),
                          log_target=True, reduction="batchmean") * T * T
            loss = loss + (1 - alpha) * ce + alpha * kl
        else:
            loss = loss + ce
    if hidden_weight > 0 and t_out is not None and getattr(out, "hidden_states", None) is not None:
        hs = [F.mse_loss(a, b) for a, b in zip(out.hidden_states[1:], t_out.hidden_states[1:]) if a.shape == b.shape]
        if hs:
            loss = loss + hidden_weight * torch.stack(hs).mean()
    return loss


def _progress(enabled: bool, console):
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TimeRemainingColumn(),
                   console=console or Console(stderr=True), transient=True)
    bar.start()
    return bar
