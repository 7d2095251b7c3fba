"""What a family adapter reports: the prunable units of a model and the weights each one owns.

Three kinds of unit (docs/algorithms.md §2.3–2.4):
  HeadGroup     one attention layer; unit h = rows R_h of Q, K, V (+ bias), columns R_h of O,
                (a fused qkv Linear: rows R_h of each of its three blocks)
                and entry h of any per-head tensor (e.g. Swin's relative-position-bias table)
  FFNGroup      one feed-forward block; unit j = row j of fc1 (+ bias), column j of fc2, filter j
                of a depthwise conv between them, and for a gated FFN row j of its gate projection
                (or row j of each half of an fc1 that stacks both: ModernBERT's Wi)
  ChannelGroup  one set of coupled conv/linear channels; unit j = row j of every producer,
                entry j of every per-channel layer (BatchNorm, depthwise conv), and the input
                columns j of every consumer (a whole h*w block of columns after a flatten)

Modules are named by their dotted path in the model (`model.get_submodule(path)`), so a group
stays valid after the surgery replaced the modules it names.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class HeadGroup:
    name: str  # the attention module's path; its head-count attributes get updated
    q: str
    k: str
    v: str
    o: str
    num_heads: int
    head_dim: int
    # attributes on the attention module to keep in step: attr -> "heads" | "all_head_size"
    attrs: dict[str, str] = field(default_factory=dict)
    # per-head parameters: (parameter path, axis that indexes heads)
    per_head: list[tuple[str, int]] = field(default_factory=list)
    kind: str = "heads"
    # q, k and v are one Linear (q == k == v) whose output rows are laid out [3, heads, head_dim]
    fused: bool = False

    @property
    def size(self) -> int:
        return self.num_heads

    def qkv_rows(self, heads) -> set[int]:
        """The rows of the q/k/v Linear(s) that belong to `heads` (all three blocks of a fused one)."""
        rows = {h * self.head_dim + d for h in heads for d in range(self.head_dim)}
        if not self.fused:
            return rows
        width = self.num_heads * self.head_dim
        return {s * width + r for s in range(3) for r in rows}


@dataclass
class FFNGroup:
    name: str
    fc1: str
    fc2: str
    size: int
    kind: str = "ffn"
    # depthwise convs between fc1 and fc2 (SegFormer's / PVT-v2's Mix-FFN): filter j goes with neuron j
    per_channel: list[str] = field(default_factory=list)
    # a gated FFN (act(gate(x)) * up(x)): the gate Linear's row j goes with neuron j
    gate: str | None = None
    # fc1 stacks `halves` blocks of `size` rows, split by chunk() in the forward (ModernBERT's Wi: input
    # and gate in one Linear): neuron j owns row j of each block
    halves: int = 1

    def fc1_rows(self, units) -> set[int]:
        return {h * self.size + j for h in range(self.halves) for j in units}


@dataclass
class Consumer:
    path: str  # a Linear or Conv reading the channels on its input axis 1
    offset: int = 0  # where this group's channels start in the consumer's input (after a concat)
    stride: int = 1  # columns per channel (h*w after a channel-major flatten)


@dataclass
class ChannelGroup:
    name: str
    producers: list[str]  # Conv/Linear whose output rows are the channels
    per_channel: list[Consumer]  # BatchNorm / depthwise conv on these channels (offset after a concat)
    consumers: list[Consumer]
    size: int
    kind: str = "channels"


Group = HeadGroup | FFNGroup | ChannelGroup
