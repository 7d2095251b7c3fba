"""Recovery options used by the MiniLM recovery bench: a CPU-time budget that ends fine-tuning
(and drives its LR schedule), frozen parameter prefixes, dropout off, and distill's curve."""

from __future__ import annotations

import pytest
import torch

from sparsa.data import load_dataset
from sparsa.errors import SparsaError

pytestmark = pytest.mark.usefixtures("fast_checkpoints")


def _tiny_vit(seed: int = 0):
    from transformers import ViTConfig, ViTForImageClassification

    from sparsa.models import from_module

    torch.manual_seed(seed)
    cfg = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=16, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=32, num_labels=10, hidden_dropout_prob=0.1,
                    attention_probs_dropout_prob=0.1)
    return from_module(ViTForImageClassification(cfg).eval())


def _data():
    return load_dataset("digits", "calib").subset(64)


def test_cpu_budget_stops_early_and_reports(monkeypatch):
    import itertools
    import time
    import types

    from sparsa.prune import finetune as ft

    # a fake CPU clock (0.05 s per reading, two readings per step): the stop is behaviour, not machine speed
    ticks = itertools.count()
    monkeypatch.setattr(ft, "time", types.SimpleNamespace(perf_counter=time.perf_counter,
                                                          process_time=lambda: 0.05 * next(ticks)))
    lm, data = _tiny_vit(), _data()
    rep = ft.finetune(lm, data, steps=10_000, batch_size=16, kd="none", cpu_budget_s=0.3, progress=False)
    assert rep["stop"] == "cpu_budget" and rep["steps"] == 6  # 0.05 s counted per step: 6 steps reach 0.3 s
    assert rep["cpu_s"] >= 0.3
    finetune = ft.finetune
    full = finetune(_tiny_vit(), data, steps=3, batch_size=16, kd="none", cpu_budget_s=1e6, progress=False)
    assert full["stop"] == "steps" and full["steps"] == 3
    with pytest.raises(SparsaError, match="cpu_budget_s"):
        finetune(lm, data, steps=3, cpu_budget_s=0, progress=False)


def test_freeze_and_dropout_off():
    from sparsa.prune.finetune import finetune

    lm, data = _tiny_vit(), _data()
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    finetune(lm, data, steps=3, batch_size=16, kd="none", lr=1e-2, freeze=("vit.embeddings.",), dropout=False,
             progress=False)
    after = dict(lm.model.named_parameters())
    frozen = [n for n in before if n.startswith("vit.embeddings.")]
    assert frozen and all(torch.equal(before[n], after[n]) for n in frozen)
    assert any(not torch.equal(before[n], after[n]) for n in before if n not in frozen)
    ps = {m.p for m in lm.model.modules() if isinstance(m, torch.nn.Dropout)}
    assert ps == {0.1}, "dropout probabilities are restored after training"
    # with dropout off, training is a deterministic function of the seed and the data order
    a, b = _tiny_vit(1), _tiny_vit(1)
    for m in (a, b):
        torch.manual_seed(123 if m is a else 456)  # dropout would draw from these different streams
        finetune(m, data, steps=2, batch_size=16, kd="none", lr=1e-2, dropout=False, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
    with pytest.raises(SparsaError, match="leaves no parameter"):
        finetune(lm, data, steps=1, freeze=("",), progress=False)


def test_distill_curve_detail():
    from sparsa.metrics import accuracy
    from sparsa.prune.recover import distill

    dense, data = _tiny_vit(), _data()
    student = dense.clone()
    d = distill(student, dense, data, steps=4, eval_every=2, evaluate=lambda lm: accuracy(lm, data),
                batch_size=16, kd="logits", progress=False)
    assert [s for s, _ in d["curve"]] == [0, 2, 4] == [x["step"] for x in d["curve_detail"]]
    cpu = [x["kd_cpu_s"] for x in d["curve_detail"]]
    assert cpu[0] == 0 and cpu == sorted(cpu)
    assert d["curve"][-1][1] == pytest.approx(accuracy(student, data))
