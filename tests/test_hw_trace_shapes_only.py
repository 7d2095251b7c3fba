"""The traced workload on fake tensors (shapes only, no arithmetic) is the workload of a real pass: the
same ops, attention calls, unplaced ops and MACs. Where the forward needs values the real pass runs;
whatever the fake pass stores on modules is put back."""

from __future__ import annotations

import pytest
import torch

from sparsa.hw import trace
from sparsa.hw.trace import trace_model
from sparsa.hw.workload import _blocks
from sparsa.models.tiny import tiny_model


def _both(model, inputs, **kw):
    return (trace_model(model, inputs, **kw), trace_model(model, inputs, shapes_only=False, **kw))


def _same(a, b):
    assert a.ops == b.ops and a.attention == b.attention
    assert a.not_simulated == b.not_simulated and a.flop_counter_macs == b.flop_counter_macs and a.meta == b.meta


@pytest.mark.parametrize("family", ["bert", "bert-no-mask", "vit", "swin", "videomae", "conv"])
def test_shapes_only_trace_equals_the_real_one(family):
    loaded = tiny_model(family.split("-")[0])
    attn, blocks = _blocks(loaded)
    inputs = loaded.example_inputs(batch=2)
    if family == "bert-no-mask":  # without a mask the fake pass runs (with one, the real pass does)
        inputs = {"input_ids": inputs["input_ids"]}
    a, b = _both(loaded.model, inputs, attention_modules=attn, blocks=blocks)
    assert a.ops and any(op.kind == "gemm" for op in a.ops)
    _same(a, b)


class _Caching(torch.nn.Module):
    """Keeps its last input on itself (as some models cache position tables) and branches on a value."""

    def __init__(self, branch: bool):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)
        self.branch = branch
        self.register_buffer("seen", torch.zeros(1))

    def forward(self, x):
        self.last = x
        self.seen = self.seen + 1
        y = self.lin(x)
        if self.branch and bool(y.sum() > -1e9):  # a value the fake pass does not have
            y = y * 2
        return y


@pytest.mark.parametrize("branch", [False, True])
def test_fake_pass_leaves_no_fake_tensor_and_falls_back_on_values(branch, monkeypatch):
    m = _Caching(branch)
    x = torch.randn(3, 8)
    fell_back = []
    real = trace._traced
    monkeypatch.setattr(trace, "_traced", lambda *a, fake, **k: fell_back.append(not fake) or real(*a, fake=fake, **k))
    a = trace_model(m, {"x": x})
    assert fell_back == [False, True] if branch else fell_back == [False]
    assert not hasattr(m, "last") or type(m.last) is torch.Tensor
    if not branch:  # the fake pass put the module back as it was
        assert not hasattr(m, "last") and torch.equal(m.seen, torch.zeros(1))
    b = trace_model(m, {"x": x}, shapes_only=False)
    _same(a, b)
    assert torch.equal(m(x), m(x))  # the module still runs on real tensors
