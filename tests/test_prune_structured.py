"""Structured pruning removes units; the pruned model equals the zeroed-consumer reference."""

import pytest
import torch

from sparsa.errors import SparsaError
from sparsa.models import load
from sparsa.models.tiny import tiny_model
from sparsa.prune import PrunePlan, apply_keep, compute_importance, n_keep, prune, select_units
from sparsa.prune.equivalence import zeroed_consumers

FAMILIES = ["bert", "vit", "swin", "videomae", "conv", "video-conv", "roberta", "electra", "distilbert", "deit"]


def _out(model, x):
    with torch.no_grad():
        y = model(**x)
    return y.logits if hasattr(y, "logits") else getattr(y, "last_hidden_state", y)


def _plan(family, **kw):
    if family == "conv":
        return PrunePlan(channels=0.5, **kw)
    return PrunePlan(heads=0.5, ffn=0.5, channels=0.5 if family == "video-conv" else 0.0, **kw)


@pytest.mark.parametrize("family", FAMILIES)
def test_prune_zero_changes_nothing(family):
    lm = tiny_model(family)
    x = lm.example_inputs(batch=2, seq_len=16)
    p = prune(lm, PrunePlan(heads=0.0, ffn=0.0, channels=0.0))
    assert torch.equal(_out(p.model, x), _out(lm.model, x))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("criterion", ["l1_group", "random"])
def test_pruned_equals_zeroed_consumers(family, criterion):
    lm = tiny_model(family)
    x = lm.example_inputs(batch=2, seq_len=16)
    p = prune(lm, _plan(family, importance=criterion, seed=3))
    kept = p.record["stages"][-1]["kept"]
    with zeroed_consumers(lm, kept):
        ref = _out(lm.model, x)
    assert p.model is not lm.model
    assert (_out(p.model, x) - ref).abs().max() <= 1e-5
    assert (_out(p.model, x) - _out(lm.model, x)).abs().max() > 1e-4  # something was really removed
    n0 = sum(t.numel() for t in lm.model.parameters())
    assert sum(t.numel() for t in p.model.parameters()) < n0


def test_seed000_video_model_conv3d_stem_l1():
    """Seed 000's situation done right: Conv3d stem + transformer, L1 (mean |W|) channel pruning."""
    lm = tiny_model("video-conv")
    m0 = lm.model
    scores = compute_importance(lm, "l1_mean_producer", groups={"channels": lm.adapter.channel_groups()})
    # seed 000: s_j = mean(|W[j, :, :, :, :]|) of the producer
    assert torch.allclose(scores["channels"]["conv1"], m0.conv1.weight.abs().mean(dim=(1, 2, 3, 4)))
    p = prune(lm, PrunePlan(channels=0.3, heads=0.5, ffn=0.5, importance="l1_mean_producer"))
    m = p.model
    c1 = n_keep(8, 0.3)
    assert (m.conv1.out_channels, m.bn1.num_features, m.conv2.in_channels) == (c1, c1, c1)
    c2 = n_keep(16, 0.3)
    assert (m.conv2.out_channels, m.bn2.num_features, m.embed.in_features) == (c2, c2, c2)
    assert m.conv1.weight.shape == (c1, 3, 3, 3, 3)  # not the seed's Conv(num_keep, C_out) mix-up
    assert [b.attn.num_heads for b in m.blocks] == [2, 2]
    kept = p.record["stages"][-1]["kept"]
    # kept channels are the top-scoring ones, in their original order
    top = torch.topk(scores["channels"]["conv1"], c1).indices.sort().values.tolist()
    assert kept["channels"]["conv1"] == top
    x = lm.example_inputs(batch=2)
    with zeroed_consumers(lm, kept):
        ref = _out(m0, x)
    assert (_out(m, x) - ref).abs().max() <= 1e-5


def test_per_layer_head_counts_and_sorted_indices():
    lm = tiny_model("vit")
    groups = lm.adapter.head_groups()
    keep = {"heads": {groups[0].name: [3, 1], groups[1].name: [0, 1, 2]}}
    p = lm.clone()
    applied = apply_keep(p, keep)
    assert applied["heads"][groups[0].name] == [1, 3]
    assert p.describe()["heads_per_layer"] == [2, 3]
    att = p.model.get_submodule(groups[0].name)
    assert att.num_attention_heads == 2 and att.q_proj.out_features == 2 * att.head_dim
    x = lm.example_inputs(batch=2)
    with zeroed_consumers(lm, applied):
        ref = _out(lm.model, x)
    assert (_out(p.model, x) - ref).abs().max() <= 1e-5


def test_bad_plans():
    lm = tiny_model("vit")
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(SparsaError, match="out of range"):
            PrunePlan(heads=bad)
    with pytest.raises(SparsaError, match="unknown importance"):
        PrunePlan(heads=0.5, importance="magic")
    name = lm.adapter.head_groups()[0].name
    with pytest.raises(SparsaError, match="removes every head"):
        prune(lm, PrunePlan(keep={"heads": {name: []}}))
    with pytest.raises(SparsaError, match="no prunable channels"):
        prune(lm, PrunePlan(channels=0.5))
    assert n_keep(12, 0.5) == 6 and n_keep(2, 0.9) == 1 and n_keep(10, 0.7) == 3


def test_global_scope_and_criteria():
    lm = tiny_model("swin")
    x = lm.example_inputs(batch=4)
    data = x["pixel_values"]
    for crit in ("l2", "taylor", "activation"):
        s = compute_importance(lm, crit, data=data)
        assert [len(v) for v in s["heads"].values()] == [2, 4]
        assert all(torch.isfinite(v).all() and (v >= 0).all() for v in s["ffn"].values())
    s = compute_importance(lm, "l1_group")
    keep = select_units(s, PrunePlan(heads=0.5, ffn=0.5, scope="global"))
    assert sum(len(v) for v in keep["ffn"].values()) == n_keep(64 + 128, 0.5)
    assert all(len(v) >= 1 for v in keep["heads"].values())


def test_minilm_activation_beats_random():
    """Data-driven importance on the real MiniLM keeps the embedding closer than a random choice."""
    from sparsa.data.text import EVAL_SENTENCES
    from sparsa.metrics import fidelity

    lm = load("minilm")
    calib = ["The quick brown fox jumps over the lazy dog near the river bank.",
             "Stock markets fell sharply on Monday after the report.",
             "Please remember to bring your passport to the airport.",
             "The recipe calls for two cups of flour and a pinch of salt."] * 2
    texts = EVAL_SENTENCES[:12]
    act = prune(lm, PrunePlan(heads=0.5, ffn=0.5, importance="activation"), data=calib)
    rnd = prune(lm, PrunePlan(heads=0.5, ffn=0.5, importance="random"))
    fa = fidelity(act, lm, texts, lm.tokenizer)["cosine_mean"]
    fr = fidelity(rnd, lm, texts, lm.tokenizer)["cosine_mean"]
    assert fa > fr


class _DepthwiseNet(torch.nn.Module):
    """Depthwise conv (per-channel member), a view-flatten into a Linear, a hidden Linear."""

    input_shape = (3, 8, 8)

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 6, 1)
        self.fc = nn.Linear(6 * 4 * 4, 12)
        self.out = nn.Linear(12, 3)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = torch.nn.functional.max_pool2d(self.pw(torch.relu(self.dw(x))), 2)
        x = x.view(x.size(0), -1)
        return self.out(torch.relu(self.fc(x)))


def test_depthwise_and_view_flatten():
    from sparsa.models import from_module
    from sparsa.models.tiny import _randomise_norms

    torch.manual_seed(0)
    net = _DepthwiseNet()
    _randomise_norms(net)
    lm = from_module(net)
    groups = {g.name: g for g in lm.adapter.channel_groups()}
    assert [c.path for c in groups["conv"].per_channel] == ["bn", "dw"]
    assert [(c.path, c.stride) for c in groups["pw"].consumers] == [("fc", 16)]
    p = prune(lm, PrunePlan(channels=0.5))
    m = p.model
    assert (m.conv.out_channels, m.dw.groups, m.dw.out_channels, m.pw.in_channels) == (4, 4, 4, 4)
    assert (m.pw.out_channels, m.fc.in_features, m.fc.out_features, m.out.out_features) == (3, 48, 6, 3)
    x = lm.example_inputs(batch=3)
    with zeroed_consumers(lm, p.record["stages"][-1]["kept"]):
        ref = _out(lm.model, x)
    assert (_out(m, x) - ref).abs().max() <= 1e-5
