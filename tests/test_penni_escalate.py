"""ESCALATE (docs/algorithms.md §7): 8-bit basis / ternary coefficients stored at those widths, and the
reorganised order (ternary input combinations first) equal to PENNI's order."""

import math
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

from sparsa.decompose import PenniConv, decompose, prune_coefficients, set_impl, shrink
from sparsa.decompose.escalate import (
    EscalateConv,
    Int8Layer,
    hybridize,
    pack_ternary,
    storage_bytes,
    unpack_ternary,
)
from sparsa.errors import SparsaError
from sparsa.models import from_module, load
from sparsa.models.zoo import TinyCNN


def test_ternary_packing_round_trip_and_errors():
    torch.manual_seed(0)
    for n in (1, 4, 7, 37, 1000):
        c = torch.randint(-1, 2, (n,), dtype=torch.int8)
        p = pack_ternary(c)
        assert p.dtype == torch.uint8 and p.numel() == math.ceil(n / 4)
        assert torch.equal(unpack_ternary(p, n), c)
    assert pack_ternary(torch.tensor([1, -1, 0, 1], dtype=torch.int8)).item() == 0b01_00_11_01
    with pytest.raises(SparsaError, match=r"\{-1, 0, \+1\}"):
        pack_ternary(torch.tensor([2], dtype=torch.int8))
    with pytest.raises(SparsaError, match="invalid code"):
        unpack_ternary(torch.tensor([0b10], dtype=torch.uint8), 1)
    with pytest.raises(SparsaError, match="too short"):
        unpack_ternary(torch.tensor([0], dtype=torch.uint8), 5)


def _hybrid_net():
    torch.manual_seed(1)
    net = TinyCNN(width=8).eval()
    decompose(net, basis=5)
    prune_coefficients(net, 1.0)
    shrink(net, torch.randn(2, 3, 32, 32))
    return net


def test_hybrid_weights_follow_the_rule():
    net = _hybrid_net()
    c = net.conv2.coefs.detach().clone()
    b = net.conv2.basis.detach().clone()
    rec = hybridize(net)
    m = net.conv2
    assert isinstance(m, EscalateConv) and isinstance(net.branch_a, Int8Layer) and isinstance(net.fc1, Int8Layer)
    assert torch.equal(m.codes(), torch.sign(c).to(torch.int8))  # zeros stay zero, signs kept
    nz = c.ne(0)
    alpha = torch.stack([c[..., j].abs()[nz[..., j]].mean() for j in range(c.shape[2])])
    torch.testing.assert_close(torch.tensor(rec["layers"]["conv2"]["alpha"]), alpha)
    folded = alpha.view(-1, 1) * b
    scale = folded.abs().max() / 127  # symmetric 8-bit, max clipping
    torch.testing.assert_close(m.basis_scale, scale)
    torch.testing.assert_close(m.basis_q, torch.round(folded / scale).to(torch.int8), atol=0, rtol=0)
    assert rec["coefficient_sparsity"] > 0.5


def test_escalate_order_equals_penni_order():
    net = _hybrid_net()
    x = torch.randn(3, 3, 32, 32)
    # float PENNI layers
    set_impl(net, "penni")
    yp = net(x)
    set_impl(net, "escalate")
    torch.testing.assert_close(net(x), yp, atol=1e-5, rtol=1e-5)
    # hybrid layers: ternary combinations first vs. basis convolution first, on the same codes
    hybridize(net)
    set_impl(net, "escalate")
    ye = net(x)
    set_impl(net, "penni")
    torch.testing.assert_close(net(x), ye, atol=1e-5, rtol=1e-5)
    set_impl(net, "dense")
    torch.testing.assert_close(net(x), ye, atol=1e-5, rtol=1e-5)


def test_hybrid_export_stores_real_widths_and_reloads():
    net = _hybrid_net()
    hybridize(net)
    x = torch.randn(2, 3, 32, 32)
    ref = net(x)
    sizes = storage_bytes(net)
    with tempfile.TemporaryDirectory() as d:
        from_module(net).save(d)
        f = Path(d) / "model.safetensors"
        with safe_open(str(f), "pt") as st:
            dtypes = {k: st.get_slice(k).get_dtype() for k in st.keys()}
            n = net.conv2.out_channels * net.conv2.in_channels * net.conv2.num_basis
            assert st.get_slice("conv2.coefs_t2").get_shape() == [math.ceil(n / 4)]
        back = load(d)
        header = f.stat().st_size - sizes["total"]
    assert dtypes["conv2.basis_q"] == "I8" and dtypes["conv2.coefs_t2"] == "U8"
    assert dtypes["fc1.weight_q"] == "I8" and dtypes["bn1.weight"] == "F32"
    assert not any(k.endswith(("coefs", "basis")) for k in dtypes)  # no float copy of the decomposition
    assert 0 < header < 8192  # the file is the tensors at their widths plus the JSON header
    assert isinstance(back.model.conv2, EscalateConv) and back.model.conv2.impl == "escalate"
    torch.testing.assert_close(back.model(x), ref)


def test_hybrid_aware_training_sees_exactly_the_stored_values():
    net = _hybrid_net()
    x = torch.randn(2, 3, 32, 32)
    for m in net.modules():
        if isinstance(m, PenniConv):
            m.hybrid_qat = True
    y_qat = net(x)
    y_qat.sum().backward()  # straight-through: gradients reach the float coefficients and basis
    assert net.conv2.coefs.grad is not None and net.conv2.basis.grad is not None
    for m in net.modules():
        if isinstance(m, PenniConv):
            m.hybrid_qat = False
    hybridize(net, others="float")  # only the decomposed layers: what the hybrid-aware forward quantizes
    torch.testing.assert_close(net(x), y_qat.detach(), atol=1e-5, rtol=1e-5)


def test_hybridize_needs_decomposed_layers():
    with pytest.raises(SparsaError, match="no decomposed convolutions"):
        hybridize(nn.Sequential(nn.Conv2d(1, 2, 3)))
    with pytest.raises(SparsaError, match="others"):
        hybridize(nn.Sequential(nn.Conv2d(1, 2, 3)), others="int4")


def test_quantize_hybrid_finetunes_then_hybridizes():
    """The one ESCALATE verb (CLI and recipe): `epochs` of hybrid-aware fine-tuning, pruned coefficients
    kept at zero, then the hybrid layers; no epochs needs no data, epochs without data is refused."""
    from sparsa.data import Dataset
    from sparsa.decompose.escalate import quantize_hybrid

    torch.manual_seed(0)
    train = Dataset(kind="image", name="random", split="train", x=torch.randn(16, 3, 32, 32),
                    y=torch.randint(0, 10, (16,)), class_names=[str(i) for i in range(10)])
    plain, tuned = _hybrid_net(), _hybrid_net()
    zeros = tuned.conv2.coefs.detach().eq(0)
    r0 = quantize_hybrid(plain, None, epochs=0)
    r1 = quantize_hybrid(tuned, train, epochs=1)
    assert r0["finetune"] == [] and len(r1["finetune"]) == 1
    assert isinstance(tuned.conv2, EscalateConv) and not tuned.training
    assert torch.equal(tuned.conv2.codes().eq(0), zeros)  # the fine-tuning kept the pruned coefficients at zero
    a, b = plain.state_dict(), tuned.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)  # and it changed what gets quantized
    assert r1["storage"]["total"] == storage_bytes(tuned)["total"] and r1["layers"]["layers"]
    with pytest.raises(SparsaError, match="needs labelled training data"):
        quantize_hybrid(_hybrid_net(), None, epochs=2)
