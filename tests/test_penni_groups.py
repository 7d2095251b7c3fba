"""PENNI's structured variant (penalty="group"): the group-lasso penalty, channel pruning across
coupled groups, and shrink really removing the pruned channels with the masked model's function."""

import pytest
import torch
from torch import nn

from sparsa.decompose import PenniConfig, merge_to_dense, retrain, shrink
from sparsa.decompose.groups import group_penalty, merge_masks, prune_channels
from sparsa.errors import SparsaError
from _penni_nets import decomposed_tiny_cnn


def _net(seed=0):
    return decomposed_tiny_cnn(seed)


def test_group_penalty_is_the_sum_of_slice_norms_and_bn_scales():
    net = _net()
    want = 0.0
    for m in net.modules():
        if hasattr(m, "coefs"):
            c = m.coefs.detach()
            want += sum(float(c[o].norm()) for o in range(c.shape[0])) + sum(float(c[:, i].norm()) for i in range(c.shape[1]))
        elif isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1):
            w = m.weight.detach()
            want += sum(float(w[o].norm()) for o in range(w.shape[0])) + sum(float(w[:, i].norm()) for i in range(w.shape[1]))
        elif isinstance(m, nn.BatchNorm2d):
            want += float(m.weight.detach().abs().sum())
    got = group_penalty(net)
    assert float(got.detach()) == pytest.approx(want, rel=1e-5)
    got.backward()
    assert net.conv2.coefs.grad is not None and net.bn1.weight.grad is not None


def test_group_pruning_then_shrink_removes_channels_and_keeps_the_masked_function():
    net = _net(1)
    with torch.no_grad():  # weak channels: small BN scale (residual group) / unread columns (concat group)
        net.bn1.weight[[1, 5]] = 1e-3
        net.bn3.weight[[1, 5]] = 1e-3
        net.bn2.weight[2] = 1e-3
        net.fc1.weight[:, 16 * 3:16 * 4] *= 1e-3  # bn_cat channel 3 (branch_a output 3) barely read
    x = torch.randn(4, 3, 32, 32)
    res = prune_channels(net, x[:2], s=0.2)
    assert res["removed"], res
    masked = net(x)  # pruned columns are now exactly zero
    assert not bool(net.conv2.coefs[:, 1].any()) and not bool(net.conv4.coefs[:, 5].any())
    assert not bool(net.conv3.coefs[:, 2].any())
    assert not bool(res["masks"]["fc1.weight"][:, 16 * 3:16 * 4].any())
    rec = shrink(net, x[:2], mode="safe")
    assert rec["channels"], "shrink removed nothing"
    assert net.conv1.out_channels == 6 == net.conv2.in_channels == net.conv4.in_channels == net.bn1.num_features
    assert net.conv2.out_channels == 7 == net.conv3.in_channels
    assert net.branch_a.out_channels == 7 and net.fc1.in_features == 15 * 16
    torch.testing.assert_close(net(x), masked, atol=1e-5, rtol=1e-5)
    merge_to_dense(net)  # and the narrower dense convolutions compute the same
    assert type(net.conv2) is nn.Conv2d and net.conv2.weight.shape[:2] == (7, 6)
    torch.testing.assert_close(net(x), masked, atol=1e-5, rtol=1e-5)


def test_prune_channels_keeps_one_channel_per_group_and_masks_merge():
    net = _net(2)
    res = prune_channels(net, torch.randn(2, 3, 32, 32), s=1e9)  # everything below threshold
    for dropped, size in res["removed"].values():
        assert dropped == size - 1
    a = {"w": torch.tensor([True, True, False])}
    b = {"w": torch.tensor([True, False, True]), "v": torch.tensor([False])}
    m = merge_masks(a, b)
    assert m["w"].tolist() == [True, False, False] and m["v"].tolist() == [False]
    with pytest.raises(SparsaError, match="channel threshold"):
        prune_channels(net, torch.randn(2, 3, 32, 32), s=-1)


def test_group_penalty_training_runs_and_bad_penalty_is_refused():
    net = _net(3)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    before = float(group_penalty(net).detach())
    retrain(net, (x, y), epochs=2, lam=0.5, lr=0.05, batch_size=16, penalty="group")
    assert float(group_penalty(net).detach()) < before  # a strong penalty shrinks the slices
    with pytest.raises(SparsaError, match="sparsity penalty"):
        retrain(net, (x, y), epochs=1, penalty="l0")
    with pytest.raises(SparsaError, match="penalty"):
        PenniConfig(penalty="l0")
