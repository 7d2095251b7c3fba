"""Small plain-PyTorch models that sparsa can prune, save and rebuild (no Hugging Face).

`TinyVideoNet` is seed 000's situation: a Conv3d stem whose channels feed a token embedding,
then transformer blocks (heads and FFN neurons prunable), then a classifier. `TinyCNN` is a
digit-sized conv net with a residual add, a concatenation and a flatten into a Linear.

Each class records its constructor arguments in `self.init_kwargs` (what `save` stores, so
`load` can rebuild it), its per-sample `input_shape` and its `modality`.
"""

from __future__ import annotations

import torch
from torch import nn

from sparsa.models.graph import register_opaque_module
from sparsa.models.module_classes import register_module_class


class MultiHeadSelfAttention(nn.Module):
    """Q, K, V, O projections; head count may shrink (head_dim stays, docs/algorithms.md §2.4)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        inner = num_heads * self.head_dim
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.o_proj = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (p(x).view(b, n, -1, self.head_dim).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        a = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.o_proj(a.transpose(1, 2).reshape(b, n, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


@register_opaque_module
class TransformerBlock(nn.Module):
    """Pre-norm block; its residual width is never pruned (LayerNorm couples it, docs/algorithms.md §2.3 rule 6)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


@register_module_class  # folders name it; load builds it by that name
class TinyVideoNet(nn.Module):
    """Video classifier: Conv3d stem -> tokens -> transformer blocks -> mean pool -> Linear."""

    modality = "video"

    def __init__(
        self, num_classes: int = 4, in_channels: int = 3, frames: int = 8, image_size: int = 32,
        stem_channels: tuple[int, int] | list[int] = (16, 32), dim: int = 64, depth: int = 2,
        num_heads: int = 4, mlp_ratio: float = 4.0,
    ):
        super().__init__()
        self.init_kwargs = dict(
            num_classes=num_classes, in_channels=in_channels, frames=frames, image_size=image_size,
            stem_channels=list(stem_channels), dim=dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
        )
        # (C, T, H, W): the layout of one clip for the convs
        self.input_shape = (in_channels, frames, image_size, image_size)
        c1, c2 = stem_channels
        self.conv1 = nn.Conv3d(in_channels, c1, 3, stride=(1, 2, 2), padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(c1)
        self.conv2 = nn.Conv3d(c1, c2, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(c2)
        self.act = nn.ReLU()
        t, s = (frames + 1) // 2, ((image_size + 1) // 2 + 1) // 2
        self.embed = nn.Linear(c2, dim)
        self.pos = nn.Parameter(torch.zeros(1, t * s * s, dim))
        self.blocks = nn.Sequential(*[TransformerBlock(dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.conv1(pixel_values)))
        x = self.act(self.bn2(self.conv2(x)))
        x = x.flatten(2).transpose(1, 2)  # [B, C, T', H', W'] -> [B, tokens, C]
        x = self.embed(x) + self.pos
        x = self.norm(self.blocks(x))
        return self.head(x.mean(1))


@register_module_class
class TinyCNN(nn.Module):
    """Image classifier with a residual add, a concatenation and a flatten into a Linear."""

    modality = "image"

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: int = 32, width: int = 16, hidden: int = 64):
        super().__init__()
        self.init_kwargs = dict(num_classes=num_classes, in_channels=in_channels, image_size=image_size, width=width, hidden=hidden)
        self.input_shape = (in_channels, image_size, image_size)
        w = width
        self.conv1 = nn.Conv2d(in_channels, w, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.conv2 = nn.Conv2d(w, w, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(w)
        self.conv3 = nn.Conv2d(w, w, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(w)
        self.conv4 = nn.Conv2d(w, 2 * w, 3, stride=2, padding=1)
        self.branch_a = nn.Conv2d(2 * w, w, 1)
        self.branch_b = nn.Conv2d(2 * w, w, 3, padding=1)
        self.bn_cat = nn.BatchNorm2d(2 * w)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc1 = nn.Linear(2 * w * 16, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)
        self.act = nn.ReLU()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.conv1(pixel_values)))
        y = self.act(self.bn2(self.conv2(x)))
        x = self.act(x + self.bn3(self.conv3(y)))  # residual add couples conv1 and conv3
        x = self.act(self.conv4(x))
        x = torch.cat([self.branch_a(x), self.branch_b(x)], dim=1)
        x = self.act(self.bn_cat(x))
        x = torch.flatten(self.pool(x), 1)  # channel-major: channel j owns 16 columns of fc1
        return self.fc2(self.act(self.fc1(x)))


ZOO = {"TinyVideoNet": TinyVideoNet, "TinyCNN": TinyCNN}
