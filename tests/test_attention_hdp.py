"""HDP golden model: equivalence to dense attention, head pruning, determinism, baselines, errors."""

import math

import pytest
import torch

from sparsa.attention.baselines import (
    SpAttenState,
    dense_attention,
    energon_attention,
    spatten_attention,
    topk_attention,
)
from sparsa.attention.bounds import dense_error_bound
from sparsa.attention.hdp import HDPConfig, hdp_attention_int
from sparsa.errors import SparsaError


def _qkv(B=2, H=3, N=21, D=16, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, N, D, generator=g) * scale for _ in range(3)]


def _dense(q, k, v, valid):
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    s = s.masked_fill(~valid[:, None, None, :], float("-inf"))
    return torch.softmax(s, -1) @ v


@pytest.mark.parametrize("newton", [1, 2])
def test_no_pruning_equals_dense_within_bound(newton):
    q, k, v = _qkv()
    valid = torch.ones(2, 21, dtype=torch.bool)
    valid[1, 17:] = False
    cfg = HDPConfig(frac_bits=10, total_bits=16, rho_b=-1.0, approx=False, newton_steps=newton, block=2)
    out, st = hdp_attention_int(q, k, v, cfg, valid)
    ref = _dense(q, k, v, valid)
    err = float(((out - ref) * valid[:, None, :, None]).abs().max())
    bound = dense_error_bound(q, k, v, cfg, valid)
    assert err <= bound
    assert bound < 0.1  # the bound is informative, not vacuous
    assert st.summary()["block_sparsity"] == 0.0
    assert st.padded == 1 and st.summary()["padded"] == 1  # 21 tokens padded to a multiple of 2
    # the golden output is exactly the integer codes scaled
    assert torch.equal(out, (st.output_int.double() * 2.0**-cfg.v_frac_bits).float())


def test_fewer_frac_bits_cost_accuracy():
    q, k, v = _qkv()
    ref = _dense(q, k, v, torch.ones(2, 21, dtype=torch.bool))
    errs = [float((hdp_attention_int(q, k, v, HDPConfig(frac_bits=f, total_bits=f + 5, rho_b=-1.0,
                                                           newton_steps=2))[0] - ref).abs().max())
            for f in (2, 10)]
    assert errs[1] < errs[0]


def test_pruned_head_is_zero_and_its_ops_are_not_counted():
    q, k, v = _qkv(B=1, H=4, N=16)
    q[0, 2] *= 0.01  # head 2: tiny scores, lowest head importance
    cfg0 = HDPConfig(rho_b=0.0)
    _, st0 = hdp_attention_int(q, k, v, cfg0)
    th = st0.head_importance[0]
    tau = int(th[2]) + 1
    assert int(th.min()) == int(th[2]) and sorted(th.tolist())[1] >= tau
    out, st = hdp_attention_int(q, k, v, cfg0.with_(tau_h=tau))
    assert st.head_mask[0].tolist() == [True, True, False, True]
    assert torch.equal(out[0, 2], torch.zeros_like(out[0, 2]))
    assert torch.equal(out[0, [0, 1, 3]], hdp_attention_int(q, k, v, cfg0)[0][0, [0, 1, 3]])
    # kept elements of the surviving heads only; integer pass is counted for all heads
    kept_alive = int(st0.elem_keep[0, [0, 1, 3]].sum())
    assert st.ops["kept_elements"] == kept_alive
    assert st.ops["frac_macs"] == 2 * 16 * kept_alive
    assert st.ops["pv_macs"] == 16 * kept_alive
    assert st.ops["int_macs"] == 4 * 16 * 16 * 16
    assert st.summary()["pruned_heads"] == 1


@pytest.mark.parametrize("cfg", [HDPConfig(rho_b=0.25), HDPConfig(importance="rowmax", threshold="gap", gap=6,
                                                                       split="round", block=2, newton_steps=1)])
def test_bit_identical_across_runs_and_batch_splits(cfg):
    q, k, v = _qkv(B=4, N=19, scale=2.0)
    valid = torch.ones(4, 19, dtype=torch.bool)
    valid[2, 11:] = False
    out, st = hdp_attention_int(q, k, v, cfg, valid)
    out2, st2 = hdp_attention_int(q, k, v, cfg, valid)
    assert torch.equal(st.output_int, st2.output_int) and torch.equal(st.block_mask, st2.block_mask)
    parts = [hdp_attention_int(q[i:i + 1], k[i:i + 1], v[i:i + 1], cfg, valid[i:i + 1]) for i in range(4)]
    assert torch.equal(torch.cat([p[1].output_int for p in parts]), st.output_int)
    assert torch.equal(torch.cat([p[1].block_mask for p in parts]), st.block_mask)
    assert torch.equal(torch.cat([p[1].head_mask for p in parts]), st.head_mask)


def test_masks_are_row_balanced_and_padding_excluded():
    q, k, v = _qkv(N=13)
    valid = torch.ones(2, 13, dtype=torch.bool)
    valid[0, 9:] = False
    out, st = hdp_attention_int(q, k, v, HDPConfig(rho_b=0.5, block=2), valid)
    vb = st.valid_blocks[:, None].expand_as(st.block_mask)
    assert not (st.block_mask & ~vb).any()
    rows = vb.any(-1)
    assert bool((st.block_mask.any(-1) | ~rows).all())  # every valid block-row keeps ≥ 1 block
    assert torch.equal(out[0, :, 9:], torch.zeros_like(out[0, :, 9:]))  # padded queries output 0


def test_bad_input_errors():
    q, k, v = _qkv()
    with pytest.raises(SparsaError, match="must be"):
        hdp_attention_int(q, k[:, :, :5], v)
    with pytest.raises(SparsaError, match="valid"):
        hdp_attention_int(q, k, v, HDPConfig(), torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(SparsaError, match="block"):
        HDPConfig(block=0)
    with pytest.raises(SparsaError, match="ratio"):
        topk_attention(q, k, v, 1.5)


def test_baselines_prune_what_they_say():
    q, k, v = _qkv(B=1, H=2, N=32, scale=1.5)
    valid = torch.ones(1, 32, dtype=torch.bool)
    out, st = topk_attention(q, k, v, 0.75, HDPConfig(block=2, v_mode="float"), valid)
    assert bool((st.block_mask.sum(-1) == 4).all())  # ceil(0.25 · 16) blocks per block-row
    _, ste = topk_attention(q, k, v, 0.5, HDPConfig(v_mode="float"), valid, granularity="element")
    assert bool((ste.elem_keep.sum(-1) == 16).all())
    _, sten = energon_attention(q, k, v, 0.0, HDPConfig(v_mode="float"), valid)
    assert 0.5 < sten.summary()["attention_sparsity"] < 0.95
    dense, _ = dense_attention(q, k, v, valid)
    assert torch.allclose(dense, _dense(q, k, v, valid), atol=1e-5)
    state = SpAttenState(0.5)
    spatten_attention(q, k, v, state, HDPConfig(v_mode="float"), valid)  # layer 0: nothing pruned
    out2, st2 = spatten_attention(q, k, v, state, HDPConfig(v_mode="float"), valid)
    assert int(st2.head_mask.sum()) == 1 and torch.equal(out2[0, ~st2.head_mask[0]], torch.zeros(1, 32, 16))
