"""HDP's faster paths give the integers of the plain one: heads run in groups (long sequences) and the
softmax on gathered kept elements (sparse masks) are exact rewrites, so masks, counts and outputs match."""

import pytest
import torch

import sparsa.attention.hdp as hdp
from sparsa.attention.hdp import HDPConfig, hdp_attention_int

CFGS = [
    HDPConfig(importance="rowmax", threshold="gap", gap=6.0, split="round", block=1, newton_steps=1, v_mode="float"),
    HDPConfig(rho_b=0.25, v_mode="fixed", tau_h=300.0),
    HDPConfig(importance="signed", threshold="gap", gap=4.0, block=3, approx=False, v_mode="fixed"),
]


def _case():
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 4, 23, 8, generator=g) * 2 for _ in range(3))
    valid = torch.ones(2, 23, dtype=torch.bool)
    valid[1, 17:] = False
    bias = torch.randn(1, 4, 23, 23, generator=g)
    bias[..., :4, 12:] = -100.0  # a shift-style mask: those pairs are not attendable
    return q, k, v, valid, bias


def _same(a, b):
    (oa, sa), (ob, sb) = a, b
    assert torch.equal(oa, ob)
    for name in ("block_mask", "head_mask", "head_importance", "elem_keep", "valid_len"):
        assert torch.equal(getattr(sa, name), getattr(sb, name)), name
    assert (sa.output_int is None) == (sb.output_int is None)
    if sa.output_int is not None:
        assert torch.equal(sa.output_int, sb.output_int)
    assert sa.ops == sb.ops


@pytest.mark.parametrize("cfg", CFGS)
@pytest.mark.parametrize("with_bias", [False, True])
def test_head_groups_and_sparse_softmax_are_exact(monkeypatch, cfg, with_bias):
    q, k, v, valid, bias = _case()
    b = bias if with_bias else None
    monkeypatch.setattr(hdp, "SPARSE_FRACTION", -1.0)  # dense softmax, all heads at once: the reference
    ref = hdp_attention_int(q, k, v, cfg, valid, b)
    monkeypatch.setattr(hdp, "SPARSE_FRACTION", 2.0)  # always the gathered softmax
    _same(ref, hdp_attention_int(q, k, v, cfg, valid, b))
    monkeypatch.setattr(hdp, "HEAD_CHUNK_SCORES", 2 * 24 * 24)  # one head per group
    _same(ref, hdp_attention_int(q, k, v, cfg, valid, b))
    monkeypatch.setattr(hdp, "HEAD_CHUNK_SCORES", 2 * 3 * 24 * 24)  # groups of 3 heads and 1
    _same(ref, hdp_attention_int(q, k, v, cfg, valid, b))
