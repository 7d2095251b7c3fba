"""`tiny-cnn`: the small residual CNN (digits, 32×32×3) that PENNI is measured on.

    stem  conv3×3(3→c0) BN ReLU, maxpool 2
    block1  conv3×3(c0→m1) BN ReLU conv3×3(m1→c0) BN, + identity, ReLU;  maxpool 2
    trans conv3×3(c0→c1) BN ReLU
    block2  conv3×3(c1→m2) BN ReLU conv3×3(m2→c1) BN, + identity, ReLU
    head  adaptive avg-pool 2×2, flatten, Linear(c1·4 → classes)

It has what §5.4's shrinking must handle: consecutive convs, BatchNorm, residual groups
(c0 and c1 channels are shared by the identity paths) and a flatten into the first Linear
(4 columns per channel).
"""

from __future__ import annotations

from torch import Tensor, nn


def _conv_bn(cin: int, cout: int) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)


class ResBlock(nn.Module):
    def __init__(self, channels: int, mid: int):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(channels, mid)
        self.conv2, self.bn2 = _conv_bn(mid, channels)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        h = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(h)) + x)


class TinyCNN(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 10, widths=(32, 32, 64, 64), pool_out: int = 2):
        super().__init__()
        c0, m1, c1, m2 = widths
        self.config = {"architecture": "TinyCNN", "in_channels": in_channels, "num_classes": num_classes,
                       "widths": list(widths), "pool_out": pool_out}
        self.stem, self.stem_bn = _conv_bn(in_channels, c0)
        self.relu = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.block1 = ResBlock(c0, m1)
        self.pool2 = nn.MaxPool2d(2)
        self.trans, self.trans_bn = _conv_bn(c0, c1)
        self.block2 = ResBlock(c1, m2)
        self.head_pool = nn.AdaptiveAvgPool2d(pool_out)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c1 * pool_out * pool_out, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool1(self.relu(self.stem_bn(self.stem(x))))
        x = self.pool2(self.block1(x))
        x = self.block2(self.relu(self.trans_bn(self.trans(x))))
        return self.fc(self.flatten(self.head_pool(x)))


def build(config: dict) -> TinyCNN:
    """TinyCNN from its config dict (the `config.json` of the fixture)."""
    return TinyCNN(config.get("in_channels", 3), config.get("num_classes", 10), tuple(config.get("widths", (32, 32, 64, 64))),
                   config.get("pool_out", 2))
