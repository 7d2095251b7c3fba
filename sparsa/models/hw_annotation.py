"""What a compressed layer tells the rest of sparsa about itself.

One protocol, so that techniques (quantization, pruning, decomposition) describe their layers and
the simulator and the evaluation read the description without importing any technique. A layer
class answers two questions:

    def hw_annotation(self) -> HwAnnotation | tuple[HwAnnotation | None, ...] | None
    def effective_weights(self) -> dict[str, Tensor]   # its logical float weights, by local name

`effective_weights` matters for layers that keep their weights as codes (buffers, not parameters):
size and sparsity accounting reads the logical weights through `logical_weights()` below.

A single annotation applies to every GEMM the layer's forward pass runs; a tuple gives one per
GEMM, in the order the forward pass runs them (PENNI: basis stage, then combination stage).
A plain Linear/Conv has no method: its weight's zeros are counted (`measured_annotation`), so a
magnitude-pruned model is seen as unstructured-sparse without anyone declaring it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

# how the layer's weights are kept: every entry ("dense"), only the non-zeros of a pruned matrix
# ("unstructured"), PENNI's shared basis kernels and its (sparse) coefficients (ESCALATE: 2-bit ternary codes)
Storage = Literal["dense", "unstructured", "penni_basis", "penni_coefficients"]


@dataclass(frozen=True)
class HwAnnotation:
    weight_bits: int | None = None  # bits of each stored weight (None: the architecture's operand width)
    act_bits: int | None = None  # bits of the GEMM's activation operand when the layer quantizes it
    weight_density: float = 1.0  # non-zero fraction of the weights (1: dense)
    storage: Storage = "dense"
    # the layer's own non-GEMM ops ((de)quantization, scale multiplies) are its GEMM's datapath,
    # not separate vector work
    fused_datapath: bool = False

    def __post_init__(self):
        if not 0.0 <= self.weight_density <= 1.0:
            raise ValueError(f"weight_density={self.weight_density} is not a fraction in [0, 1]")

    def as_dict(self) -> dict:
        return asdict(self)


def density(weight: torch.Tensor, zero=0) -> float:
    """Non-zero fraction of `weight` (entries equal to `zero`, e.g. an asymmetric zero point, count as zero)."""
    n = weight.numel()
    if n == 0:
        return 1.0
    nz = int(torch.count_nonzero(weight)) if isinstance(zero, int) and zero == 0 else int((weight != zero).sum())
    return nz / n


_MEASURED = (nn.Linear, nn.modules.conv._ConvNd)


def measured_annotation(module: nn.Module) -> HwAnnotation | None:
    """A plain Linear/Conv with zeros in its weight (magnitude pruning, tolerance schedules' masks):
    unstructured at its measured density. None for dense weights and every other module, so dense
    models are simulated exactly as before."""
    if not isinstance(module, _MEASURED) or not isinstance(getattr(module, "weight", None), torch.Tensor):
        return None
    d = density(module.weight.detach())
    return HwAnnotation(weight_density=d, storage="unstructured") if d < 1.0 else None


def annotations_of(module: nn.Module) -> tuple[HwAnnotation | None, ...] | HwAnnotation | None:
    """The module's own `hw_annotation()` if it has one, else what its weight shows."""
    fn = getattr(module, "hw_annotation", None)
    if callable(fn):
        ann = fn()
        if ann is None or isinstance(ann, HwAnnotation):
            return ann
        return tuple(ann)
    return measured_annotation(module)


def logical_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter (shared tensors once), plus the logical float weights of layers that store
    codes instead (`effective_weights()`), keyed by their full names; a code that maps to 0.0 is a
    zero weight."""
    out, seen = {}, set()
    for name, p in model.named_parameters():
        if id(p) not in seen:
            seen.add(id(p))
            out[name] = p.detach()
    for name, m in model.named_modules():
        own = getattr(type(m), "effective_weights", None)
        if own is not None:
            with torch.no_grad():
                out.update({f"{name}.{k}" if name else k: v for k, v in own(m).items()})
        bias = getattr(m, "bias", None)
        if isinstance(bias, torch.Tensor) and f"{name}.bias" not in out:
            out[f"{name}.bias"] = bias.detach()
    return out
