"""PENNI decomposition (docs/algorithms.md §6.1–6.3, §6.5): exactness, best rank-d fit, training rules, bad input."""

import copy

import pytest
import torch
from torch import nn

from sparsa.decompose import (
    PenniConv,
    PenniLinear,
    decompose,
    finetune,
    merge_to_dense,
    prune_coefficients,
    retrain,
    set_impl,
    svd_basis,
)
from sparsa.decompose.penni import _alternating_phase
from sparsa.errors import SparsaError

IMPLS = ("dense", "penni", "escalate")


def _check_all_orders(model, x, ref, atol=1e-5):
    for impl in IMPLS:
        set_impl(model, impl)
        y = model(x)
        y = y.logits if hasattr(y, "logits") else y
        torch.testing.assert_close(y, ref, atol=atol, rtol=1e-4, msg=f"impl={impl}")


def test_full_rank_conv2d_all_orders():
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(4, 6, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 5, (3, 5), padding=(2, 2), dilation=(2, 1), bias=False),
    )
    x = torch.randn(2, 4, 13, 11)
    ref = m(x)
    d = copy.deepcopy(m)
    rec = decompose(d, basis={"0": 9, "2": 15})
    assert [l.status for l in rec.layers] == ["decomposed", "decomposed"]
    assert isinstance(d[0], PenniConv) and isinstance(d[2], PenniConv)
    assert max(l.rel_error for l in rec.layers) < 1e-6
    _check_all_orders(d, x, ref)


def test_full_rank_conv3d_all_orders():
    torch.manual_seed(1)
    m = nn.Sequential(nn.Conv3d(3, 4, (2, 3, 3), stride=(2, 1, 2), padding=(0, 1, 1)))
    x = torch.randn(2, 3, 6, 9, 8)
    ref = m(x)
    decompose(m, basis=18)
    assert m[0].basis.shape == (18, 18)
    _check_all_orders(m, x, ref)


def test_fewer_kernels_than_taps_still_exact():
    # 2 kernels of 3x3x3 = 27 taps: the SVD must still give a full basis of R^27
    m = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1))
    x = torch.randn(1, 1, 5, 5, 5)
    ref = m(x)
    decompose(m, basis=27)
    _check_all_orders(m, x, ref)


def test_full_rank_linear_segments_and_lowrank():
    torch.manual_seed(2)
    lin = nn.Linear(32, 7)
    x = torch.randn(3, 5, 32)
    ref = lin(x)
    seg = nn.Sequential(copy.deepcopy(lin))
    decompose(seg, basis={}, linear=True, linear_group=16, linear_basis=16)
    assert isinstance(seg[0], PenniLinear) and seg[0].coefs.shape == (7, 2, 16)
    _check_all_orders(seg, x, ref)
    low = nn.Sequential(copy.deepcopy(lin))  # group = in_features: W = C·basis (low-rank mode)
    decompose(low, basis={}, linear=True, linear_group=32, linear_basis=7)
    _check_all_orders(low, x, ref)


def test_svd_basis_is_best_rank_d_fit():
    torch.manual_seed(3)
    k = torch.randn(40, 9, dtype=torch.float64)
    sv = torch.linalg.svdvals(k)
    for d in (1, 3, 5):
        b, c = svd_basis(k, d)
        torch.testing.assert_close(b @ b.T, torch.eye(d, dtype=torch.float64))
        err = (k - c @ b).norm()
        # Eckart-Young: the residual is exactly the discarded singular values
        torch.testing.assert_close(err, sv[d:].norm())


def test_default_rule_and_skips_are_recorded():
    m = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.Conv2d(8, 8, 3, padding=1, groups=2),
        nn.Conv2d(8, 8, 1),
        nn.Conv2d(8, 8, 2),
        nn.Conv2d(8, 8, 3, padding=1, padding_mode="circular"),
    )
    rec = decompose(m)  # default: d = 5 where k² > 5
    by = {l.name: l for l in rec.layers}
    assert by["0"].status == "decomposed" and by["0"].basis == 5
    assert by["1"].status == "skipped" and "groups=2" in by["1"].note
    assert by["2"].status == "kept" and "1×1" in by["2"].note
    assert by["3"].status == "skipped" and "kernel volume 4" in by["3"].note
    assert by["4"].status == "skipped" and "circular" in by["4"].note
    assert isinstance(m[1], nn.Conv2d) and isinstance(m[0], PenniConv)


def test_basis_larger_than_kernel_is_a_clear_error():
    m = nn.Sequential(nn.Conv2d(3, 4, 3))
    with pytest.raises(SparsaError, match=r"d=10 is larger than its kernel volume 9 \(3×3\)"):
        decompose(m, basis=10)
    assert isinstance(m[0], nn.Conv2d)  # nothing was changed
    with pytest.raises(SparsaError, match="at least 1"):
        decompose(m, basis=0)
    with pytest.raises(SparsaError, match="not convolutions of this model"):
        decompose(m, basis={"nope": 3})
    with pytest.raises(SparsaError, match="larger than the segment length"):
        decompose(nn.Sequential(nn.Linear(32, 4)), basis={}, linear=True, linear_group=16, linear_basis=17)
    with pytest.raises(SparsaError, match="execution order"):
        set_impl(m, "fast")


def test_prune_threshold_is_strict_population_std():
    m = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Conv2d(3, 2, 1))
    decompose(m, basis=4)
    before = m[0].coefs.detach().clone()
    w1 = m[1].weight.detach().clone()
    masks = prune_coefficients(m, s=0.8)
    t = 0.8 * before.std(unbiased=False)
    torch.testing.assert_close(m[0].coefs.detach(), torch.where(before.abs() < t, 0.0, before))
    assert torch.equal(masks["0.coefs"], before.abs() >= t)
    t1 = 0.8 * w1.std(unbiased=False)  # 1x1 conv weights: same rule
    torch.testing.assert_close(m[1].weight.detach(), torch.where(w1.abs() < t1, 0.0, w1))
    with pytest.raises(SparsaError, match="non-negative"):
        prune_coefficients(m, s=-1)


def _tiny_task():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    x, y = torch.randn(24, 1, 6, 6), torch.randint(0, 3, (24,))
    return model, (x, y)


def test_alternating_retraining_and_masked_finetune():
    assert [_alternating_phase(e) for e in range(7)] == ["coefs", "basis", "basis", "coefs", "coefs", "basis", "basis"]
    model, data = _tiny_task()
    decompose(model, basis=4)
    b0, c0 = model[0].basis.detach().clone(), model[0].coefs.detach().clone()
    hist = retrain(model, data, epochs=1, lam=1e-3, batch_size=8)  # epoch 0: coefficients only
    assert hist[0]["phase"] == "coefs"
    assert torch.equal(model[0].basis.detach(), b0) and not torch.equal(model[0].coefs.detach(), c0)
    masks = prune_coefficients(model, 1.0)
    zeros = model[0].coefs.detach() == 0
    assert zeros.any()
    finetune(model, data, epochs=2, batch_size=8, masks=masks)
    assert bool((model[0].coefs.detach()[zeros] == 0).all())
    assert model[0].coefs.requires_grad and model[0].basis.requires_grad


def test_merge_to_dense_is_exact():
    model, (x, _) = _tiny_task()
    decompose(model, basis=5)
    model.eval()
    ref = model(x)
    assert merge_to_dense(model) == ["0"]
    assert type(model[0]) is nn.Conv2d
    torch.testing.assert_close(model(x), ref)


def test_videomae_patch_embedding_conv3d():
    # the video fixture's family: a Hugging Face VideoMAE whose patch embedding is a Conv3d
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    from sparsa.decompose import shrink

    torch.manual_seed(5)
    cfg = VideoMAEConfig(image_size=16, patch_size=4, num_channels=3, num_frames=4, tubelet_size=2, hidden_size=32,
                         num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, num_labels=3)
    model = VideoMAEForVideoClassification(cfg).eval()
    x = torch.randn(2, 4, 3, 16, 16)
    ref = model(pixel_values=x).logits
    rec = decompose(model, basis=32)  # 2x4x4 = 32 taps: full rank
    assert rec.decomposed == ["videomae.embeddings.patch_embeddings.projection"]
    _check_all_orders(model, x, ref, atol=1e-4)
    with torch.no_grad():
        model.videomae.embeddings.patch_embeddings.projection.coefs[..., 20:] = 0
    r = shrink(model, {"pixel_values": x})
    assert "not traceable" in r["note"] or r["channels"] == {}
    assert r["bases"] == {"videomae.embeddings.patch_embeddings.projection": [32, 20]}
