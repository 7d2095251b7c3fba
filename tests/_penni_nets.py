"""Test nets shared by the PENNI test files (pytest puts tests/ on sys.path)."""

import torch
from torch import nn

from sparsa.decompose import decompose
from sparsa.models.zoo import TinyCNN


def decomposed_tiny_cnn(seed: int = 0) -> nn.Module:
    """TinyCNN (width 8) with non-trivial BatchNorm statistics, so dead channels carry constants,
    and its convolutions decomposed into 5 basis kernels."""
    torch.manual_seed(seed)
    net = TinyCNN(width=8).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    decompose(net, basis=5)
    return net
