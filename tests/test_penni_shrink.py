"""PENNI shrinking (docs/algorithms.md §6.4) on a net with BatchNorm, a residual add, a concatenation and a
flatten into a Linear: dead channels/bases go, the function stays, the result saves and reloads."""

import tempfile

import pytest
import torch
from torch import nn

from sparsa.decompose import PenniConv, decompose, merge_to_dense, prune_coefficients, set_impl, shrink
from sparsa.errors import SparsaError
from sparsa.models import from_module, load
from _penni_nets import decomposed_tiny_cnn


def _net(seed=0):
    net = decomposed_tiny_cnn(seed)
    prune_coefficients(net, 1.0)
    return net


def _kill(net):
    with torch.no_grad():
        net.conv2.coefs[3] = 0  # conv2 output 3 dead (BN shift may keep a constant)
        net.conv3.coefs[:, 6] = 0  # conv3 does not read its input 6 -> conv2 output 6 goes
        # residual group {conv1, conv3 outputs; bn1, bn3; conv2, conv4 inputs}:
        net.conv2.coefs[:, 5] = 0  # channel 5 is read by neither consumer -> removed everywhere
        net.conv4.coefs[:, 5] = 0
        net.conv2.coefs[:, 4] = 0  # channel 4 is still read by conv4 -> kept (union over the group)
        net.branch_b.coefs[:, :, 1] = 0  # basis 1 of branch_b dead
        net.branch_a.weight[2] = 0  # branch_a output 2 dead -> bn_cat entry 2 and 16 columns of fc1
        net.bn_cat.bias[2] = -5.0  # ... and its constant is cut by the ReLU: safe to remove
        net.bn_cat.running_mean[2] = 0.0
        net.fc1.weight[:, 16 * 9:16 * 10] = 0  # fc1 ignores bn_cat channel 9 (branch_b output 1)


def test_shrink_safe_preserves_function_and_removes_channels():
    net = _net()
    _kill(net)
    x = torch.randn(4, 3, 32, 32)
    ref = net(x)
    rec = shrink(net, x[:2], mode="safe")
    torch.testing.assert_close(net(x), ref, atol=1e-5, rtol=1e-5)
    assert net.conv3.in_channels == 7 and net.conv2.out_channels == 7  # channel 6 of conv2/conv3 pair gone
    assert net.conv1.out_channels == 7 == net.conv3.out_channels == net.bn1.num_features == net.bn3.num_features
    assert net.conv2.in_channels == 7 == net.conv4.in_channels
    assert net.branch_a.out_channels == 7 and net.bn_cat.num_features == 14
    assert net.fc1.in_features == 14 * 16  # columns of bn_cat channels 2 and 9 removed
    assert net.branch_b.out_channels == 7
    assert rec["bases"]["branch_b"] == [5, 4] and net.branch_b.num_basis == 4
    assert rec["channels"]["fc1"] == [[256, 64], [224, 64]]


def test_shrink_ref_mode_drops_constant_channels():
    net = _net(1)
    with torch.no_grad():
        net.conv2.coefs[3] = 0
        net.bn2.bias[3] = 2.0  # dead output, non-zero constant after BN+ReLU
    x = torch.randn(2, 3, 32, 32)
    safe = _net(1)
    safe.load_state_dict(net.state_dict())
    shrink(safe, x, mode="safe")
    assert safe.conv2.out_channels == 8  # the constant is read by conv3: kept
    shrink(net, x, mode="ref")
    assert net.conv2.out_channels == 7  # the reference removes it anyway
    with pytest.raises(SparsaError, match="shrink mode"):
        shrink(net, x, mode="aggressive")


def test_shrunk_model_saves_and_reloads():
    net = _net(2)
    _kill(net)
    x = torch.randn(2, 3, 32, 32)
    shrink(net, x)
    set_impl(net, "penni")
    ref = net(x)
    with tempfile.TemporaryDirectory() as d:
        lm = from_module(net)
        lm.record = {"stages": [{"name": "penni"}]}
        lm.save(d)
        back = load(d)
    assert isinstance(back.model.conv2, PenniConv) and back.model.conv2.impl == "penni"
    assert back.model.conv3.in_channels == net.conv3.in_channels
    assert back.record["stages"][0]["name"] == "penni"
    torch.testing.assert_close(back.model(x), ref)
    # the merged form (plain convs, fewer channels) also round-trips
    merge_to_dense(net)
    with tempfile.TemporaryDirectory() as d:
        from_module(net).save(d)
        merged = load(d)
    assert type(merged.model.conv3) is nn.Conv2d and merged.model.conv3.in_channels == net.conv3.in_channels
    torch.testing.assert_close(merged.model(x), ref, atol=1e-5, rtol=1e-5)


def test_untraceable_model_only_loses_dead_bases():
    class Weird(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 3)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                return self.conv(x)
            return self.conv(-x)

    m = Weird()
    decompose(m, basis=5)
    with torch.no_grad():
        m.conv.coefs[..., 4] = 0
        m.conv.coefs[1] = 0
    rec = shrink(m, torch.randn(1, 2, 5, 5))
    assert "not traceable" in rec["note"]
    assert m.conv.num_basis == 4 and m.conv.out_channels == 3


def test_fold_batchnorm_is_exact_including_concat():
    from sparsa.decompose import fold_batchnorm

    net = _net(3)  # decomposed convs, BN with non-trivial statistics, a concat into bn_cat
    x = torch.randn(2, 3, 32, 32)
    ref = net(x)
    assert fold_batchnorm(net) == ["bn1", "bn2", "bn3", "bn_cat"]
    assert isinstance(net.bn_cat, nn.Identity) and net.conv2.bias is not None
    torch.testing.assert_close(net(x), ref, atol=1e-5, rtol=1e-4)
