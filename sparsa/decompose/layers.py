"""PENNI's decomposed layers (docs/algorithms.md §6.1, §6.5, §7).

A decomposed layer keeps `d` shared basis kernels `basis [d, K]` (K = kernel volume) and one
coefficient per (output, input, basis): `coefs [C_out, C_in, d]`, so that

    W[o, i] = Σ_b coefs[o, i, b] · basis[b]          (reshaped to the kernel's shape)

Three executable orders compute the same function (`impl`):
  "dense"    rebuild W and run one ordinary convolution (training; and the fastest on CPU
             when the coefficients are dense)
  "penni"    PENNI's order: depthwise basis convolution Z[i,b] = X_i ⊛ basis_b (every input
             channel with every basis kernel), then the 1×1 combination Y_o = Σ_{i,b} C[o,i,b]·Z[i,b]
  "escalate" ESCALATE's order: input combinations first, U[o,b] = Σ_i C[o,i,b]·X_i (a 1×1
             convolution; add/subtract only once C is ternary), then Y_o = Σ_b U[o,b] ⊛ basis_b
             (a grouped convolution, one group per output channel)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sparsa.errors import SparsaError
from sparsa.models.hw_annotation import HwAnnotation, density
from sparsa.models.layer_kinds import register_layer_kind
from sparsa.models.resize import set_submodule
from sparsa.quant.primitives import choose_qparams, fake_quant, ternarize

IMPLS = ("dense", "penni", "escalate")
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise SparsaError(f"unknown PENNI execution order {impl!r}", hint=f"use one of {', '.join(IMPLS)}")
    return impl


def hybrid_values(coefs: Tensor, basis: Tensor) -> tuple[Tensor, Tensor]:
    """The float values the hybrid layer computes with, differentiable straight-through (STE):
    coefficients sign(C), basis dequant(quant_int8(α_b·basis_b)). `hybridize` stores exactly these."""
    with torch.no_grad():
        _, alpha = ternarize(coefs.detach(), axis=2)
    c_eff = coefs + (torch.sign(coefs) - coefs).detach()
    folded = alpha.to(basis.dtype).view(-1, 1) * basis
    qp = choose_qparams(folded.detach(), bits=8, scheme="sym", clip="max")
    return c_eff, fake_quant(folded, qp)


def penni_annotations(impl: str, coef_values: Tensor, basis_extra: dict | None = None,
                      coefs_extra: dict | None = None) -> tuple[HwAnnotation, ...] | None:
    """One annotation per GEMM the decomposed forward runs, in its order: "penni" runs the basis
    stage then the combination; "escalate" the combination first. "dense" rebuilds W and runs it as
    an ordinary layer: nothing to annotate. `*_extra`: more fields (bits) for either stage."""
    if impl == "dense":
        return None
    basis = HwAnnotation(storage="penni_basis", **(basis_extra or {}))
    comb = HwAnnotation(weight_density=density(coef_values), storage="penni_coefficients", **(coefs_extra or {}))
    return (basis, comb) if impl == "penni" else (comb, basis)


class PenniConv(nn.Module):
    """A Conv{2,3}d (groups=1) stored as basis kernels + per-kernel coefficients."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, ...], num_basis: int,
                 stride=1, padding=0, dilation=1, bias: bool = True, impl: str = "dense"):
        super().__init__()
        self.dims = len(kernel_size)
        if self.dims not in (2, 3):
            raise SparsaError(f"PenniConv supports 2-D and 3-D kernels, got kernel_size={kernel_size}",
                              hint="decompose Conv2d or Conv3d layers")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = tuple(int(k) for k in kernel_size)
        self.stride = _tuple(stride, self.dims)
        self.padding = padding if isinstance(padding, str) else _tuple(padding, self.dims)
        self.dilation = _tuple(dilation, self.dims)
        self.num_basis = int(num_basis)
        k = math.prod(self.kernel_size)
        self.basis = nn.Parameter(torch.zeros(self.num_basis, k))
        self.coefs = nn.Parameter(torch.zeros(self.out_channels, self.in_channels, self.num_basis))
        self.bias = nn.Parameter(torch.zeros(self.out_channels)) if bias else None
        self.impl = _check_impl(impl)
        # ESCALATE-aware training: the forward pass sees the 8-bit basis / ternary coefficients
        # that `hybridize` will store, gradients pass straight through (sparsa.decompose.escalate)
        self.hybrid_qat = False

    # ------------------------------------------------------------------ views
    @property
    def kernel_volume(self) -> int:
        return math.prod(self.kernel_size)

    def basis_kernels(self) -> Tensor:
        """[d, K] float basis (subclasses holding integer codes dequantize here)."""
        if self.hybrid_qat:
            return hybrid_values(self.coefs, self.basis)[1]
        return self.basis

    def coefficients(self) -> Tensor:
        """[C_out, C_in, d] float coefficients."""
        if self.hybrid_qat:
            return hybrid_values(self.coefs, self.basis)[0]
        return self.coefs

    def dense_weight(self) -> Tensor:
        """W[o,i] = Σ_b C[o,i,b]·basis_b, shaped like the original conv weight."""
        w = torch.einsum("oib,bk->oik", self.coefficients(), self.basis_kernels())
        return w.reshape(self.out_channels, self.in_channels, *self.kernel_size)

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> Tensor:
        if self.impl == "dense":
            return self.forward_dense(x)
        if self.impl == "penni":
            return self.forward_penni(x)
        return self.forward_escalate(x)

    def forward_dense(self, x: Tensor) -> Tensor:
        conv = _CONV[self.dims]
        return conv(x, self.dense_weight(), self.bias, self.stride, self.padding, self.dilation)

    def forward_penni(self, x: Tensor) -> Tensor:
        conv, d, ci = _CONV[self.dims], self.num_basis, self.in_channels
        # basis stage, Z[i, b] = X_i ⊛ basis_b: every input channel is its own one-channel image, so
        # the d shared kernels run as one ordinary convolution over a batch of B·C_in images
        n = x.shape[0]
        z = conv(x.reshape(n * ci, 1, *x.shape[2:]), self.basis_kernels().reshape(d, 1, *self.kernel_size), None,
                 self.stride, self.padding, self.dilation)
        z = z.reshape(n, ci * d, *z.shape[2:])  # channel i*d + b
        # combination stage: 1×1 convolution over the C_in·d intermediate maps
        wc = self.coefficients().reshape(self.out_channels, ci * d, *([1] * self.dims))
        return conv(z, wc, self.bias)

    def forward_escalate(self, x: Tensor) -> Tensor:
        conv, d, co = _CONV[self.dims], self.num_basis, self.out_channels
        # combination stage at input resolution: U[o*d + b] = Σ_i C[o,i,b]·X_i (zero padding commutes)
        wc = self.coefficients().permute(0, 2, 1).reshape(co * d, self.in_channels, *([1] * self.dims))
        u = conv(x, wc)
        # basis stage, Y_o = Σ_b U[o,b] ⊛ basis_b: each output channel's d maps are one d-channel
        # image, convolved with the same d kernels (one output) over a batch of B·C_out images
        n = x.shape[0]
        y = conv(u.reshape(n * co, d, *u.shape[2:]), self.basis_kernels().reshape(1, d, *self.kernel_size), None,
                 self.stride, self.padding, self.dilation)
        y = y.reshape(n, co, *y.shape[2:])
        if self.bias is not None:
            y = y + self.bias.view(1, -1, *([1] * self.dims))
        return y

    def hw_annotation(self) -> tuple[HwAnnotation, ...] | None:
        """Basis stage dense, combination stage as sparse as the coefficients (pruned ones are zero)."""
        return penni_annotations(self.impl, self.coefficients().detach())

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, basis={self.num_basis}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}, impl={self.impl!r}")

    def sparsa_shape(self) -> dict:
        """Everything needed to rebuild an empty module of this shape (`sparsa.models.save_model` stores it)."""
        return {"type": "PenniConv", "in": self.in_channels, "out": self.out_channels,
                "kernel_size": list(self.kernel_size), "basis": self.num_basis, "stride": list(self.stride),
                "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
                "dilation": list(self.dilation), "bias": self.bias is not None, "impl": self.impl}


class PenniLinear(nn.Module):
    """A Linear whose rows are cut into segments of `group` inputs; the segments are the kernels (docs/algorithms.md §6.5).

    y_o = Σ_s Σ_b C[o,s,b]·(basis_b · x_s).  group = in_features gives the low-rank mode W ≈ C·basis.
    """

    def __init__(self, in_features: int, out_features: int, group: int, num_basis: int, bias: bool = True,
                 impl: str = "dense"):
        super().__init__()
        if group <= 0 or in_features % group:
            raise SparsaError(f"in_features={in_features} is not a multiple of the segment length {group}",
                              hint="choose a segment length that divides the layer's input width")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.group, self.num_basis = int(group), int(num_basis)
        self.segments = in_features // group
        self.basis = nn.Parameter(torch.zeros(self.num_basis, self.group))
        self.coefs = nn.Parameter(torch.zeros(self.out_features, self.segments, self.num_basis))
        self.bias = nn.Parameter(torch.zeros(self.out_features)) if bias else None
        self.impl = _check_impl(impl)

    @property
    def kernel_volume(self) -> int:
        return self.group

    def dense_weight(self) -> Tensor:
        w = torch.einsum("osb,bg->osg", self.coefs, self.basis)
        return w.reshape(self.out_features, self.in_features)

    def forward(self, x: Tensor) -> Tensor:
        if self.impl == "dense":
            return F.linear(x, self.dense_weight(), self.bias)
        xs = x.reshape(*x.shape[:-1], self.segments, self.group)
        if self.impl == "penni":
            z = xs @ self.basis.T  # [..., S, d]: every segment against every basis vector
            y = z.reshape(*x.shape[:-1], self.segments * self.num_basis) @ self.coefs.reshape(self.out_features, -1).T
        else:
            u = torch.einsum("osb,...sg->...obg", self.coefs, xs)  # input combinations first
            y = torch.einsum("...obg,bg->...o", u, self.basis)
        return y if self.bias is None else y + self.bias

    def hw_annotation(self) -> tuple[HwAnnotation, ...] | None:
        return penni_annotations(self.impl, self.coefs.detach())

    def extra_repr(self) -> str:
        return (f"{self.in_features}, {self.out_features}, group={self.group}, basis={self.num_basis}, "
                f"bias={self.bias is not None}, impl={self.impl!r}")

    def sparsa_shape(self) -> dict:
        return {"type": "PenniLinear", "in": self.in_features, "out": self.out_features, "group": self.group,
                "basis": self.num_basis, "bias": self.bias is not None, "impl": self.impl}


PENNI_LAYERS = (PenniConv, PenniLinear)


def build_from_spec(spec: dict) -> nn.Module:
    """An empty decomposed layer of the shape `spec` (from `.sparsa_shape()`) describes; weights load afterwards."""
    if spec.get("type") == "PenniConv":
        pad = spec["padding"]
        return PenniConv(spec["in"], spec["out"], tuple(spec["kernel_size"]), spec["basis"], tuple(spec["stride"]),
                         pad if isinstance(pad, str) else tuple(pad), tuple(spec["dilation"]), spec["bias"],
                         spec.get("impl", "dense"))
    if spec.get("type") == "PenniLinear":
        return PenniLinear(spec["in"], spec["out"], spec["group"], spec["basis"], spec["bias"], spec.get("impl", "dense"))
    raise SparsaError(f"unknown decomposed-layer spec {spec!r}", hint="the model record was written by another version")


register_layer_kind("PenniConv", build_from_spec)
register_layer_kind("PenniLinear", build_from_spec)


def merge_to_dense(model: nn.Module) -> list[str]:
    """Fold every decomposed layer back into one ordinary Conv/Linear (W = C·basis): same function,
    the fastest CPU form once shrinking has removed the dead channels. Returns the merged layer names."""
    merged = []
    for name, m in list(model.named_modules()):
        if isinstance(m, PenniConv):
            cls = nn.Conv2d if m.dims == 2 else nn.Conv3d
            new = cls(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                      bias=m.bias is not None)
        elif isinstance(m, PenniLinear):
            new = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
        else:
            continue
        new = new.to(m.basis.device, m.basis.dtype)
        with torch.no_grad():
            new.weight.copy_(m.dense_weight())
            if m.bias is not None:
                new.bias.copy_(m.bias)
        set_submodule(model, name, new)
        merged.append(name)
    return merged


def set_impl(model: nn.Module, impl: str) -> nn.Module:
    """Switch every decomposed layer of `model` to one execution order (returns the model)."""
    _check_impl(impl)
    for m in model.modules():
        if isinstance(m, PENNI_LAYERS):
            m.impl = impl
    return model


def _tuple(v, n: int) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    return tuple(int(x) for x in v)
