"""Fixed-point format and HDP integer pieces: exact integer semantics (docs/algorithms.md §1, §5.1)."""

import math

import pytest
import torch

from sparsa.attention import fixedpoint as fx
from sparsa.attention.bounds import approx_error_bound, exp_error, recip_error
from sparsa.attention.hdp import (
    HDPConfig,
    approx_scores_int,
    block_importance,
    head_keep,
    int_exp,
    int_reciprocal,
    row_keep_mask,
    rowmax_gap_mask,
)
from sparsa.errors import SparsaError


def test_to_fixed_round_half_even_and_saturate():
    x = torch.tensor([0.03125, 0.09375, -0.03125, 7.99, 100.0, -100.0, -0.25])
    q = fx.to_fixed(x, 4, 8)  # Q3.4
    # 0.5 LSB → 0 (even), 1.5 LSB → 2, −0.5 → −0, saturation at ±(2^7)
    assert q.tolist() == [0, 2, 0, 127, 127, -128, -4]
    assert q.dtype == torch.int64


@pytest.mark.parametrize("mode", ["floor", "trunc", "round"])
def test_split_reconstructs_exactly(mode):
    q = torch.arange(-128, 128)
    i, f = fx.split_int_frac(q, 4, mode)
    assert torch.equal(i * 16 + f, q)
    if mode == "floor":
        assert int(f.min()) == 0 and int(f.max()) == 15
    if mode == "round":
        assert int(f.min()) == -8 and int(f.max()) == 7


def test_split_spec_example():
    # docs/algorithms.md §1.2: Q3.4, x = −0.25 → q = −4, I = −1, F = 12 (floor); trunc: I = 0, F = −4
    assert [t.item() for t in fx.split_int_frac(torch.tensor(-4), 4, "floor")] == [-1, 12]
    assert [t.item() for t in fx.split_int_frac(torch.tensor(-4), 4, "trunc")] == [0, -4]


def test_saturating_ops_and_shift():
    a, b = torch.tensor([100, -100, 5]), torch.tensor([100, -100, -7])
    assert fx.sat_add(a, b, 8).tolist() == [127, -128, -2]
    assert fx.sat_mul(torch.tensor([32, -24]), torch.tensor([32, 8]), 4, 8).tolist() == [64, -12]
    assert fx.ashr(torch.tensor([-5, 5]), 1).tolist() == [-3, 2]  # floor, not toward zero
    assert fx.ashr(torch.tensor([3]), -2).tolist() == [12]


def test_bad_formats_raise():
    with pytest.raises(SparsaError):
        fx.to_fixed(torch.zeros(1), 8, 8)
    with pytest.raises(SparsaError):
        fx.split_int_frac(torch.zeros(1, dtype=torch.int64), 4, "nearest")
    with pytest.raises(SparsaError, match="rho_b"):
        HDPConfig(rho_b=1.5)
    with pytest.raises(SparsaError, match="tau_h"):
        HDPConfig(tau_h=-1)
    with pytest.raises(SparsaError):
        row_keep_mask(torch.zeros(1, 2, dtype=torch.int64), torch.ones(1, 2, dtype=torch.bool), 300)


def test_block_importance_variants():
    A = torch.tensor([[1, -2, 3, 4], [-5, 6, 7, -8], [0, 0, 1, 1], [2, 2, -1, -1]])
    valid = torch.ones(4, 4, dtype=torch.bool)
    assert block_importance(A, 2, valid, "abs").tolist() == [[14, 22], [4, 4]]
    assert block_importance(A, 2, valid, "signed").tolist() == [[0, 6], [4, 0]]
    assert block_importance(A, 2, valid, "max").tolist() == [[6, 7], [2, 1]]
    valid[:, 3] = False  # a padded key: ignored in every statistic
    assert block_importance(A, 2, valid, "abs").tolist() == [[14, 10], [4, 2]]


def _float_threshold(theta, rho):
    mean, mx, mn = theta.mean(), theta.max(), theta.min()
    th = rho * mx + (1 - rho) * mean if rho >= 0 else -rho * mn + (1 + rho) * mean
    return theta >= th


def test_row_keep_mask_matches_float_rule_and_keeps_max():
    g = torch.Generator().manual_seed(0)
    for rho_q in (-256, -128, -37, 0, 64, 200, 256):
        theta = torch.randint(0, 50, (64, 9), generator=g)
        m = row_keep_mask(theta, torch.ones_like(theta, dtype=torch.bool), rho_q)
        for r in range(64):  # float rule with ρ = ρq/256 (exact in binary)
            assert torch.equal(m[r], _float_threshold(theta[r].double(), rho_q / 256))
        assert bool(m.any(-1).all())  # row-balanced: every row keeps its maximum
    full = row_keep_mask(theta, torch.ones_like(theta, dtype=torch.bool), -256)
    assert bool(full.all())


def test_row_keep_mask_excludes_invalid_blocks():
    theta = torch.tensor([[1, 2, 100]])
    valid = torch.tensor([[True, True, False]])
    assert row_keep_mask(theta, valid, 0).tolist() == [[False, True, False]]
    assert not row_keep_mask(theta, torch.zeros_like(valid), 0).any()


def test_rowmax_gap_is_per_query_row():
    # block-row of two query rows with very different scales: each keeps its own best key block
    A = torch.tensor([[100, 100, 0, 0], [0, 0, 2, 2], [0, 0, 0, 0], [0, 0, 0, 0]])
    m = rowmax_gap_mask(A, torch.ones(4, 4, dtype=torch.bool), 2, 1)
    assert m.tolist() == [[True, True], [True, True]]


def test_head_keep_modes():
    th = torch.tensor([10, 99, 100])
    assert head_keep(th, 100, torch.tensor(10), "abs").tolist() == [False, False, True]
    assert head_keep(th, 1.0, torch.tensor(10), "mean").tolist() == [False, False, True]
    assert head_keep(th, None, torch.tensor(10)).all()


@pytest.mark.parametrize("split", ["floor", "round", "trunc"])
def test_approximation_error_matches_analytical_bound(split):
    f, D = 4, 8
    g = torch.Generator().manual_seed(1)
    qq = torch.randint(-128, 128, (3, 16, D), generator=g)
    qk = torch.randint(-128, 128, (3, 16, D), generator=g)
    IQ, FQ = fx.split_int_frac(qq, f, split)
    IK, FK = fx.split_int_frac(qk, f, split)
    T, tf = approx_scores_int(IQ, FQ, IK, FK, f, approx=True)
    Te, tfe = approx_scores_int(IQ, FQ, IK, FK, f, approx=False)
    assert (tf, tfe) == (f, 2 * f)
    assert torch.equal(Te, qq @ qk.transpose(-1, -2))  # exact product
    dropped = Te - (T << f)
    assert torch.equal(dropped, FQ @ FK.transpose(-1, -2))  # exactly the F_Q·F_Kᵀ term
    lo, hi = approx_error_bound(D, f, split)
    assert int(dropped.min()) >= lo and int(dropped.max()) <= hi
    # the bound is attained: all-maximal fractions
    fmax = 15 if split == "floor" else (-8 if split == "round" else 15)
    F = torch.full((1, D), fmax)
    assert int((F @ F.T).item()) == hi


def test_int_exp_and_reciprocal_exact_values_and_bounds():
    # docs/algorithms.md §5.1 step 10: 0.31% polynomial error (+ quantization), 1/17 linear reciprocal, ≤0.35% after Newton
    assert exp_error(12, 15) < 0.0035
    assert abs(recip_error(15, 0) - 1 / 17) < 1e-3
    assert recip_error(15, 1) < 0.0036 and recip_error(15, 2) < 1e-4
    # plain-Python-int re-implementation of the documented formulas, compared on many inputs
    S, E, M = 12, 15, 15
    l2, bq, aq, cq = round(math.log(2) * 2**S), round(1.353 * 2**S), round(0.3585 * 2**16), round(0.344 * 2**E)

    def exp_ref(z):
        k = (-z) // l2
        pb = z + k * l2 + bq
        poly = ((aq * pb * pb) >> (16 + 2 * S - E)) + cq
        return poly >> k if k <= 30 else 0

    zs = list(range(-200000, 1, 997)) + [0, -1, -l2, -l2 + 1]
    assert int_exp(torch.tensor(zs), S, E).tolist() == [exp_ref(z) for z in zs]
    assert int_exp(torch.tensor([0]), S, E).item() == 32777  # e^0 ≈ 1.0003 in Q.15

    def recip_ref(s, steps):
        L = s.bit_length() - 1
        m = s << (M - L) if L <= M else s >> (L - M)
        y = (((3 << M) - m) * 61681) >> 17
        for _ in range(steps):
            y = (y * ((2 << M) - ((m * y) >> M))) >> M
        return y, L

    ss = [1, 2, 3, 1000, 32768, 49152, 65535, 123456789, (1 << 40) + 12345]
    for steps in (0, 1, 2):
        y, L = int_reciprocal(torch.tensor(ss), M, steps)
        assert list(zip(y.tolist(), L.tolist())) == [recip_ref(s, steps) for s in ss]
