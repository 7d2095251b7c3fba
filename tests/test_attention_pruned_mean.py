"""pruned="mean" (pruned keys' weight goes to the row's mean value) and attendable pairs (Swin's shift mask)."""

import math

import pytest
import torch

from sparsa.attention import fixedpoint as fx
from sparsa.attention.baselines import dense_attention, energon_attention, topk_attention
from sparsa.attention.hdp import HDPConfig, hdp_attention_int, int_exp, int_reciprocal, scale_scores_int
from sparsa.attention.methods import HDP_DEFAULTS, make_config
from sparsa.errors import SparsaError


def _qkv(B=2, H=2, N=9, D=8, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, N, D, generator=g) * scale for _ in range(3)]


CFG = HDPConfig(block=1, importance="signed", threshold="rho", rho_b=0.5, split="round", newton_steps=1,
                pruned="mean")


def _reference_row(cfg, q, k, v, keep_row, i):
    """The documented integer steps of `int_softmax_mean` for one query row, written out with plain ints."""
    f, S, D = cfg.frac_bits, cfg.score_bits, q.shape[-1]
    qQ = fx.to_fixed(q, f, cfg.total_bits)
    qK = fx.to_fixed(k, f, cfg.total_bits)
    IQ, FQ = fx.split_int_frac(qQ, f, cfg.split)
    IK, FK = fx.split_int_frac(qK, f, cfg.split)
    n = k.shape[0]
    A = [int((IQ[i] * IK[j]).sum()) for j in range(n)]
    T = [(A[j] << f) + int((FQ[i] * IK[j]).sum()) + int((IQ[i] * FK[j]).sum()) for j in range(n)]
    x = [int(scale_scores_int(torch.tensor(T[j]), f, D, S)) for j in range(n)]
    xc = [int(scale_scores_int(torch.tensor(A[j]), 0, D, S)) for j in range(n)]
    m = max(x[j] for j in range(n) if keep_row[j])
    z = [x[j] - m if keep_row[j] else min(xc[j] - m, 0) for j in range(n)]
    e = [int(int_exp(torch.tensor(zj), S, cfg.exp_bits)) for zj in z]
    y, L = int_reciprocal(torch.tensor(sum(e)), cfg.recip_bits, cfg.newton_steps)
    y, L = int(y), int(L)
    sh = cfg.recip_bits + L - cfg.prob_bits
    shift = (lambda a: a >> sh) if sh >= 0 else (lambda a: a << -sh)
    P = [shift(e[j] * y) if keep_row[j] else 0 for j in range(n)]
    Pm = shift(sum(e[j] for j in range(n) if not keep_row[j]) * y)
    qV = fx.to_fixed(v, cfg.v_frac_bits, cfg.v_total_bits)
    vsum = qV.sum(0)
    vbar = [int(s) // n for s in vsum]  # floor division, as torch.div(..., rounding_mode="floor")
    lo, hi = -(2 ** (cfg.v_total_bits - 1)), 2 ** (cfg.v_total_bits - 1) - 1
    return [max(lo, min(hi, (sum(P[j] * int(qV[j, d]) for j in range(n)) + Pm * vbar[d]) >> cfg.prob_bits))
            for d in range(v.shape[-1])]


def test_mean_mode_matches_its_documented_integer_steps():
    q, k, v = _qkv(B=1, H=1)
    out, st = hdp_attention_int(q, k, v, CFG)
    assert 0.3 < st.summary()["block_sparsity"] < 0.9  # something was pruned, something kept
    for i in range(q.shape[2]):
        ref = _reference_row(CFG, q[0, 0], k[0, 0], v[0, 0], st.block_mask[0, 0, i].tolist(), i)
        assert st.output_int[0, 0, i].tolist() == ref, i
    assert torch.equal(out, fx.from_fixed(st.output_int, CFG.v_frac_bits, out.dtype))


def test_mean_mode_without_pruning_is_bit_identical_to_drop():
    q, k, v = _qkv()
    keep_all = CFG.with_(rho_b=-1.0)
    a, sa = hdp_attention_int(q, k, v, keep_all)
    b, sb = hdp_attention_int(q, k, v, keep_all.with_(pruned="drop"))
    assert bool(sa.block_mask.all())
    assert torch.equal(sa.output_int, sb.output_int) and torch.equal(a, b)


def test_mean_mode_weights_sum_to_one_and_beat_drop_on_diffuse_rows():
    # flat rows: pruned keys hold real weight; giving it to v̄ must be closer to dense than renormalising it away
    q, k, v = _qkv(scale=0.7, N=16, D=16)
    ref = dense_attention(q, k, v)[0]
    cfg = CFG.with_(frac_bits=6, total_bits=10, v_mode="float", rho_b=0.3)
    m, sm = hdp_attention_int(q, k, v, cfg)
    d, _ = hdp_attention_int(q, k, v, cfg.with_(pruned="drop"))
    assert sm.summary()["block_sparsity"] > 0.4
    assert float((m - ref).abs().mean()) < 0.6 * float((d - ref).abs().mean())


def test_mean_mode_deterministic_and_batch_split_invariant():
    q, k, v = _qkv(B=4)
    valid = torch.ones(4, 9, dtype=torch.bool)
    valid[2, 6:] = False
    full, st = hdp_attention_int(q, k, v, CFG, valid)
    again, st2 = hdp_attention_int(q, k, v, CFG, valid)
    assert torch.equal(st.output_int, st2.output_int)
    parts = [hdp_attention_int(q[i:i + 1], k[i:i + 1], v[i:i + 1], CFG, valid[i:i + 1])[1].output_int for i in range(4)]
    assert torch.equal(torch.cat(parts), st.output_int)


def _shift_bias(B, H, N):
    """A Swin-like additive term: small position bias + a −100 mask between two token groups."""
    g = torch.Generator().manual_seed(1)
    bias = torch.randn(1, H, N, N, generator=g) * 0.5
    grp = torch.arange(N) < N // 2
    masked = grp[:, None] != grp[None, :]
    return (bias + torch.where(masked, -100.0, 0.0)).expand(B, H, N, N), masked


@pytest.mark.parametrize("runner", ["hdp", "hdp-drop", "topk", "topk-element", "energon", "dense"])
def test_shift_masked_pairs_are_neither_valid_nor_kept(runner):
    B, H, N = 2, 2, 8
    q, k, v = _qkv(B=B, H=H, N=N)
    bias, masked = _shift_bias(B, H, N)
    if runner.startswith("hdp"):
        cfg = CFG if runner == "hdp" else CFG.with_(pruned="drop")
        _, st = hdp_attention_int(q, k, v, cfg, None, bias)
    elif runner.startswith("topk"):
        gran = "element" if runner == "topk-element" else "block"
        _, st = topk_attention(q, k, v, 0.5, HDPConfig(block=1, importance="signed"), None, bias, gran)
    elif runner == "energon":
        _, st = energon_attention(q, k, v, 0.0, HDPConfig(), None, bias)
    else:
        _, st = dense_attention(q, k, v, None, bias)
    attendable = int((~masked).sum()) * B * H
    assert st.ops["valid_elements"] == attendable
    assert not bool((st.elem_keep[..., :N, :N] & masked).any())
    assert st.ops["kept_elements"] <= attendable
    if runner == "dense":
        assert st.ops["kept_elements"] == attendable


def test_mean_mode_with_shift_mask_averages_only_attendable_keys():
    # rows see only their own group: with every attendable key pruned but the max, v̄ is the group mean
    B, H, N = 1, 1, 8
    q, k, v = _qkv(B=B, H=H, N=N)
    bias, masked = _shift_bias(B, H, N)
    cfg = CFG.with_(rho_b=1.0, v_mode="float", softmax="float")
    out, st = hdp_attention_int(q, k, v, cfg, None, bias)
    kept = st.elem_keep[0, 0, :N, :N]
    assert not bool((kept & masked).any()) and bool((kept.sum(-1) >= 1).all())
    # recompute the float formula: exact kept scores, integer-part scores for pruned attendable keys
    f, D = cfg.frac_bits, q.shape[-1]
    IQ, FQ = fx.split_int_frac(fx.to_fixed(q, f, cfg.total_bits), f, cfg.split)
    IK, FK = fx.split_int_frac(fx.to_fixed(k, f, cfg.total_bits), f, cfg.split)
    A = (IQ @ IK.transpose(-1, -2)).double()[0, 0]
    T = ((IQ << f) @ IK.transpose(-1, -2) + FQ @ IK.transpose(-1, -2) + IQ @ FK.transpose(-1, -2)).double()[0, 0]
    s = T / 2**f / math.sqrt(D) + bias[0, 0].double()
    sc = A / math.sqrt(D) + bias[0, 0].double()
    att = ~masked
    ref = torch.zeros(N, D, dtype=torch.float64)
    for i in range(N):
        mx = s[i][kept[i]].max()
        e = torch.where(kept[i], torch.exp(s[i] - mx), torch.exp((sc[i] - mx).clamp(max=0))) * att[i]
        p = e / e.sum()
        vbar = v[0, 0][att[i]].double().mean(0)
        ref[i] = (p * kept[i]) @ v[0, 0].double() + p[att[i] & ~kept[i]].sum() * vbar
    assert torch.allclose(out[0, 0].double(), ref, atol=1e-5)


def test_family_defaults_and_bad_input():
    for fam in ("vit", "swin"):
        cfg = make_config("hdp", fam)
        assert (cfg.pruned, cfg.importance, cfg.threshold, cfg.block) == ("mean", "signed", "rho", 1)
    # MiniLM's default (BERT) is untouched, and the seed's rule stays exact
    assert make_config("hdp", "bert") == make_config("hdp") == HDPConfig(**HDP_DEFAULTS)
    assert make_config("hdp", "bert").pruned == "drop" and make_config("hdp-seed", "swin").pruned == "drop"
    assert make_config("hdp", "vit", pruned="drop").pruned == "drop"  # explicit options win
    with pytest.raises(SparsaError, match="pruned"):
        HDPConfig(pruned="zero")


@pytest.mark.parametrize("family", ["vit", "swin"])
def test_calibrated_rho_b_hits_target_sparsity_on_calibration_inputs(family):
    from sparsa.attention import install, uninstall
    from sparsa.attention.evaluate import calibrate
    from sparsa.models.tiny import tiny_model

    lm = tiny_model(family)
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))

    def run():
        with torch.no_grad():
            lm.model(pixel_values=x)

    for target in (0.7,):
        # a random tiny model's Q·K integer parts are all 0: rank on the full fixed-point scores
        opts = calibrate(lm, "hdp", target, run, steps=10, imp_bits=4)
        assert set(opts) == {"rho_b", "imp_bits"}  # the family rule's knob
        ctrl = install(lm.model, "hdp", **opts)
        run()
        uninstall(lm.model)
        assert abs(ctrl.totals()["attention_sparsity"] - target) < 0.03, (target, opts)
