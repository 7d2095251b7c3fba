"""HDP's long-sequence form (exact float32 products, fused numba row softmax: sparsa.attention.hdp_fast)
gives the integers of the plain int64 form: masks, head importances, counts, output codes and outputs."""

import pytest
import torch

import sparsa.attention.hdp as hdp
from sparsa.attention import hdp_fast
from sparsa.attention.hdp import HDPConfig, hdp_attention_int
from sparsa.attention.methods import make_config

CFGS = [
    make_config("hdp"),  # sparsa's default: rowmax + gap, block 1, round split, one Newton step
    make_config("hdp", v_mode="fixed", gap=3.0, block=2),
    make_config("hdp-seed"),  # abs importance, ρ row rule, block 2
    HDPConfig(rho_b=0.25, v_mode="fixed", tau_h=300.0, block=3),  # padding to the block, pruned heads
    HDPConfig(importance="signed", threshold="gap", gap=4.0, block=2, approx=False, v_mode="fixed", split="trunc"),
    HDPConfig(importance="max", threshold="gap", gap=2.0, newton_steps=2, score_bits=14, exp_bits=12),
    HDPConfig(rho_b=-0.5, tau_h=40.0, tau_mode="mean", recip_bits=12, prob_bits=18, v_mode="fixed"),
]


def _case(seed, n=23, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 4, n, 16, generator=g) * scale for _ in range(3))
    valid = torch.ones(2, n, dtype=torch.bool)
    valid[1, n - 6:] = False  # padding keys/queries in the second input
    return q, k, v, valid


def _same(ref, got):
    (oa, sa), (ob, sb) = ref, got
    assert torch.equal(oa, ob)
    for name in ("block_mask", "head_mask", "head_importance", "elem_keep", "valid_len", "valid_blocks"):
        assert torch.equal(getattr(sa, name), getattr(sb, name)), name
    assert (sa.output_int is None) == (sb.output_int is None)
    if sa.output_int is not None:
        assert torch.equal(sa.output_int, sb.output_int)
    assert sa.ops == sb.ops and sa.padded == sb.padded and sa.seq_len == sb.seq_len
    assert sa.summary() == sb.summary()


@pytest.mark.parametrize("cfg", CFGS)
@pytest.mark.parametrize("seed,scale", [(0, 2.0), (1, 40.0)])  # 40: codes saturate, scores reach the bounds
@pytest.mark.parametrize("with_valid", [False, True])
def test_fast_form_is_exact(monkeypatch, cfg, seed, scale, with_valid):
    q, k, v, valid = _case(seed, scale=scale)
    valid = valid if with_valid else None
    _check_fast_against_plain(monkeypatch, q, k, v, cfg, valid)


def _check_fast_against_plain(monkeypatch, q, k, v, cfg, valid):
    """The fast form's result equals the plain int64 form's (skips where numba is missing); returns the plain one."""
    monkeypatch.setattr(hdp, "FAST_PATH", False)
    ref = hdp_attention_int(q, k, v, cfg, valid)
    fast = hdp_fast.run(q, k, v, cfg, valid)
    if fast is None:
        pytest.skip("numba is not available here: the plain form runs")
    _same(ref, fast)
    return ref


def test_fast_form_is_exact_in_head_groups(monkeypatch):
    """The long-sequence case: heads in groups (HEAD_CHUNK_SCORES), every group through the fast form."""
    q, k, v, valid = _case(5, n=64)
    cfg = make_config("hdp")
    monkeypatch.setattr(hdp, "FAST_PATH", False)
    ref = hdp_attention_int(q, k, v, cfg, valid)
    monkeypatch.setattr(hdp, "FAST_PATH", True)
    monkeypatch.setattr(hdp, "FAST_MIN_SCORES", 1)
    monkeypatch.setattr(hdp, "HEAD_CHUNK_SCORES", 2 * 64 * 64)
    _same(ref, hdp_attention_int(q, k, v, cfg, valid))


def test_products_outside_float32_fall_back():
    """A partial sum that could reach 2^24 is not exact in float32: the fast form declines."""
    big = torch.full((1, 1, 4, 2**13), 100)
    assert hdp_fast._exact_product(big, big) is None
    small = torch.full((1, 1, 4, 64), 7)
    assert torch.equal(hdp_fast._exact_product(small, small), torch.full((1, 1, 4, 4), 49.0 * 64))


def test_bias_and_mean_use_the_plain_form():
    assert not hdp_fast.eligible(make_config("hdp"), torch.zeros(1))
    assert not hdp_fast.eligible(make_config("hdp", pruned="mean"), None)
    assert not hdp_fast.eligible(make_config("hdp", softmax="float"), None)
    assert hdp_fast.eligible(make_config("hdp"), None)


@pytest.mark.parametrize("with_valid", [False, True])
def test_default_rule_runs_the_fused_rowmax_pass(monkeypatch, with_valid):
    """sparsa's default (rowmax, block 1) decides its mask, θ_H and kept count in the one numba pass,
    with the plain form's integers; a head threshold then drops whole heads from the count."""
    from sparsa.attention import hdp_rows

    calls = []
    real = hdp_rows.rowmax_keep
    monkeypatch.setattr(hdp_rows, "rowmax_keep", lambda *a: calls.append(1) or real(*a))
    q, k, v, valid = _case(3, n=40, scale=6.0)
    valid = valid if with_valid else None
    for cfg in (make_config("hdp"), make_config("hdp", tau_h=130000.0, v_mode="fixed")):
        ref = _check_fast_against_plain(monkeypatch, q, k, v, cfg, valid)
    assert len(calls) == 2
    assert not bool(ref[1].head_mask.all()) and bool(ref[1].head_mask.any())  # the threshold did prune some heads


def test_int8_product_is_exact_and_declines_where_pairs_could_saturate():
    g = torch.Generator().manual_seed(7)
    a = torch.randint(-8, 9, (2, 3, 37, 16), generator=g)
    b = torch.randint(-8, 9, (2, 3, 29, 16), generator=g)
    got = hdp_fast._int8_product(a, b)
    if got is None:
        pytest.skip("this torch has no CPU int8 GEMM: the float32 product runs")
    assert got.dtype == torch.int32 and torch.equal(got.long(), a @ b.transpose(-1, -2))
    # the extreme codes the bound still admits: 2·max(|a|·(|b|+128), (|a|+128)·|b|) ≤ 2^15 − 1
    a_ext, b_ext = torch.full((1, 9, 64), -63), torch.full((1, 5, 64), 64)
    assert torch.equal(hdp_fast._int8_product(a_ext, b_ext).long(), a_ext @ b_ext.transpose(-1, -2))
    assert hdp_fast._int8_product(torch.full((1, 4, 8), 100), torch.full((1, 4, 8), 100)) is None
    assert hdp_fast._int8_product(torch.full((4, 8), 200), torch.full((4, 8), 1)) is None  # not an int8 code


@pytest.mark.parametrize("int8_gemm", [True, False])
def test_default_rule_is_exact_with_and_without_the_int8_products(monkeypatch, int8_gemm):
    """The default rule's A and T through int32 GEMMs (T = 2^f·A + F_Q·I_Kᵀ + I_Q·F_Kᵀ) or float32 ones:
    the same integers as the plain form either way."""
    q, k, v, valid = _case(11, n=33, scale=3.0)
    cfg = make_config("hdp", v_mode="fixed")
    monkeypatch.setattr(hdp, "FAST_PATH", False)
    ref = hdp_attention_int(q, k, v, cfg, valid)
    used = []
    real = hdp_fast._int8_product
    monkeypatch.setattr(hdp_fast, "_int8_product",
                        lambda a, b, slot=None: used.append(1) or (real(a, b, slot) if int8_gemm else None))
    fast = hdp_fast.run(q, k, v, cfg, valid)
    if fast is None:
        pytest.skip("numba is not available here: the plain form runs")
    _same(ref, fast)
    assert len(used) == (2 if int8_gemm else 1)  # A, then (only when A was int32) the T product


def test_row_kernels_from_several_threads_at_once():
    """numba's work-queue layer takes one parallel launch at a time (a second one aborts the process):
    HDP called from several Python threads takes turns and gives each caller its own exact result."""
    from concurrent.futures import ThreadPoolExecutor

    cfg = make_config("hdp")
    cases = [_case(s, n=48) for s in range(6)]
    serial = [hdp_fast.run(q, k, v, cfg, valid) for q, k, v, valid in cases]
    if serial[0] is None:
        pytest.skip("numba is not available here: the plain form runs")
    with ThreadPoolExecutor(3) as pool:
        threaded = list(pool.map(lambda c: hdp_fast.run(*c[:3], cfg, c[3]), cases * 3))
    for i, got in enumerate(threaded):  # each thread's reused product buffers are its own
        _same(serial[i % len(cases)], got)
