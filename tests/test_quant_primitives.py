"""Pure quantization primitives: error bounds per scheme, search vs max clipping, bad input."""

import pytest
import torch

from sparsa.errors import SparsaError
from sparsa.quant.primitives import (
    SEARCH_ALPHAS,
    choose_qparams,
    dequantize,
    fake_quant,
    quant_error,
    quantize,
    ternarize,
)


def _heavy_tailed(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * torch.rand(shape[0], 1, generator=g)
    x[0, 0] = 12.0  # one outlier: max clipping wastes range on it
    return x


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("scheme", ["sym", "asym"])
@pytest.mark.parametrize("axis", [None, 0])
def test_max_clip_error_bound(bits, scheme, axis):
    # with max clipping nothing is clipped, so every element is within half a step of its code
    x = _heavy_tailed((16, 200))
    qp = choose_qparams(x, bits, scheme, "max", axis)
    q = quantize(x, qp)
    assert q.dtype == (torch.int8 if scheme == "sym" else torch.uint8)
    assert int(q.min()) >= qp.qmin and int(q.max()) <= qp.qmax
    err = (dequantize(q, qp) - x).abs()
    step = qp.scale if axis is None else qp.scale.view(-1, 1)
    assert (err <= step / 2 + 1e-6).all()


def test_sym_has_no_zero_point_and_narrow_range():
    x = _heavy_tailed((8, 64))
    qp = choose_qparams(x, 8, "sym", "max", 0)
    assert qp.zero_point is None
    assert (qp.qmin, qp.qmax) == (-127, 127)
    # the largest magnitude of each channel maps exactly onto ±127
    q = quantize(x, qp)
    assert (q.abs().amax(1) == 127).all()


def test_asym_formula_matches_spec():
    x = torch.tensor([-1.0, 0.0, 0.5, 3.0])
    qp = choose_qparams(x, 8, "asym", "max")
    s = 4.0 / 255
    assert torch.isclose(qp.scale, torch.tensor(s))
    assert int(qp.zero_point) == round(1.0 / s)
    assert int(quantize(torch.tensor([0.0]), qp)[0]) == int(qp.zero_point)  # zero is exact


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("scheme", ["sym", "asym"])
@pytest.mark.parametrize("axis", [None, 0])
def test_search_never_worse_than_max(bits, scheme, axis):
    for seed in range(3):
        x = _heavy_tailed((12, 300), seed)
        e_max = quant_error(x, choose_qparams(x, bits, scheme, "max", axis))
        e_search = quant_error(x, choose_qparams(x, bits, scheme, "search", axis))
        assert e_search <= e_max * (1 + 1e-6)


def test_search_helps_with_an_outlier_and_ties_go_to_larger_alpha():
    x = _heavy_tailed((1, 4000))
    e_max = quant_error(x, choose_qparams(x, 4, "sym", "max"))
    qp = choose_qparams(x, 4, "sym", "search")
    assert quant_error(x, qp) < 0.7 * e_max
    # a tensor of two values ±1 is exact at alpha=1 only: every smaller alpha clips, so 1.0 wins
    y = torch.tensor([-1.0, 1.0, 1.0, -1.0])
    assert torch.isclose(choose_qparams(y, 8, "sym", "search").scale, torch.tensor(1 / 127))
    # a constant-zero tensor: every alpha ties, the largest (1.0) is kept and scale falls back to 1
    z = torch.zeros(10)
    assert float(choose_qparams(z, 8, "sym", "search").scale) == 1.0
    assert SEARCH_ALPHAS[0] == 1.0 and SEARCH_ALPHAS[-1] == 0.3 and len(SEARCH_ALPHAS) == 71


def test_output_error_search_beats_weight_error_search_on_output():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(24, 48, generator=g)
    X = torch.randn(256, 48, generator=g) * torch.linspace(0.05, 4.0, 48)  # a few input channels dominate
    y = X @ w.T

    def out_err(qp):
        return float((X @ dequantize(quantize(w, qp), qp).T - y).pow(2).mean())

    qp_w = choose_qparams(w, 3, "sym", "search", 0)
    qp_o = choose_qparams(w, 3, "sym", "search", 0, inputs=X)
    qp_m = choose_qparams(w, 3, "sym", "max", 0)
    assert out_err(qp_o) <= out_err(qp_w) * (1 + 1e-6)
    assert out_err(qp_o) <= out_err(qp_m) * (1 + 1e-6)


def test_percentile_clips_outlier():
    x = _heavy_tailed((1, 20000))
    qp = choose_qparams(x, 8, "sym", "percentile", percentile=99.9)
    assert float(qp.scale) * 127 < 12.0


def test_fake_quant_passes_gradient():
    x = torch.randn(5, 7, requires_grad=True)
    qp = choose_qparams(x, 4, "sym", "max")
    y = fake_quant(x, qp)
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    assert torch.allclose(y, dequantize(quantize(x, qp), qp))


def test_ternarize():
    c = torch.tensor([[0.0, 0.4, -0.2], [1.0, -3.0, 0.0]])
    codes, alpha = ternarize(c, axis=0)
    assert codes.dtype == torch.int8
    assert codes.tolist() == [[0, 1, -1], [1, -1, 0]]
    assert torch.allclose(alpha, torch.tensor([0.3, 2.0]))
    qp = choose_qparams(c, "ternary", axis=0)
    assert qp.zero_point is None and qp.bits == 2
    assert torch.allclose(dequantize(quantize(c, qp), qp), codes.float() * alpha.view(-1, 1))


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"bits": 9}, "2..8"),
        ({"bits": 1}, "2..8"),
        ({"bits": 8.0}, "2..8"),
        ({"scheme": "affine"}, "sym, asym"),
        ({"clip": "mse"}, "max, percentile, search"),
        ({"axis": 3}, "axis"),
    ],
)
def test_bad_input_errors(kwargs, words):
    with pytest.raises(SparsaError, match=words.replace(".", r"\.")):
        choose_qparams(torch.randn(4, 4), **kwargs)


def test_output_search_shape_mismatch():
    with pytest.raises(SparsaError, match="in_features"):
        choose_qparams(torch.randn(4, 8), 8, "sym", "search", 0, inputs=torch.randn(10, 5))
