"""The one Dataset type every loader returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch


@dataclass
class Dataset:
    """A labelled tensor set (`kind` "image"/"video") or a list of texts (`kind` "text").

    Images: `x` is float32 `[N, C, H, W]`; video: `[N, T, C, H, W]` (the layout HF video models
    take as `pixel_values`); `y` is int64 `[N]`. Text: `texts` is a list of strings.
    """

    kind: str
    name: str
    split: str
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    texts: list[str] | None = None
    class_names: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.texts) if self.kind == "text" else int(self.y.shape[0])

    def subset(self, n: int) -> "Dataset":
        """The first `n` items (the loaders already shuffle deterministically)."""
        if self.kind == "text":
            return Dataset(self.kind, self.name, self.split, texts=self.texts[:n], info=dict(self.info))
        return Dataset(self.kind, self.name, self.split, x=self.x[:n], y=self.y[:n],
                       class_names=list(self.class_names), info=dict(self.info))

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0) -> Iterator:
        """Yield `(x, y)` tensor batches (labelled sets) or lists of texts (text sets)."""
        n = len(self)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(n)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            if self.kind == "text":
                yield [self.texts[j] for j in idx.tolist()]
            else:
                yield self.x[idx], self.y[idx]

    def __repr__(self) -> str:
        if self.kind == "text":
            return f"Dataset({self.name!r}, split={self.split!r}, kind='text', n={len(self)})"
        return (f"Dataset({self.name!r}, split={self.split!r}, kind={self.kind!r}, n={len(self)}, "
                f"x={tuple(self.x.shape)}, classes={self.num_classes})")
