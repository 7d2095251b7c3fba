"""ESCALATE's hybrid quantization of a PENNI model (docs/algorithms.md §7), stored at its real widths.

Per decomposed layer and basis b (CHOICE, docs/algorithms.md §7):
    α_b = mean |C[:, :, b]| over the non-zero coefficients        (sparsa.quant.primitives.ternarize)
    T = sign(C) ∈ {-1, 0, +1}                                      2-bit codes, 4 per byte
    basis_b ← α_b · basis_b, then symmetric 8-bit, max clipping    int8 codes + one float scale
so that W[o,i] = scale · Σ_b T[o,i,b] · q_b.  Other convolutions / Linears (1×1 convs, classifier)
become int8 per output channel (symmetric, max clipping); BatchNorm and biases stay float32.

`hybridize(model)` swaps the layers in place for `EscalateConv` / `Int8Layer`, whose state dicts
hold the int8 and packed uint8 tensors themselves: `LoadedModel.save` writes them to safetensors at
those widths and `sparsa.models.load` rebuilds the executable model. `EscalateConv` runs ESCALATE's
order by default (ternary input combinations first: additions and subtractions only, then the
8-bit basis convolution); `impl="penni"` runs PENNI's order on the same codes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sparsa.decompose.layers import PenniConv, PenniLinear, hybrid_values, penni_annotations  # noqa: F401  (hybrid_values: re-exported)
from sparsa.decompose.penni import PenniConfig
from sparsa.errors import SparsaError
from sparsa.models.graph import register_opaque_module
from sparsa.models.hw_annotation import HwAnnotation, density
from sparsa.models.layer_kinds import register_layer_kind
from sparsa.models.resize import set_submodule
from sparsa.quant.primitives import choose_qparams, quantize, ternarize

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


# ---------------------------------------------------------------------------------------------- 2-bit packing


def pack_ternary(codes: Tensor) -> Tensor:
    """{-1, 0, +1} codes -> uint8, four 2-bit two's-complement fields per byte (first code in the low bits)."""
    flat = codes.detach().flatten().to(torch.int16)
    if flat.numel() and not bool(((flat >= -1) & (flat <= 1)).all()):
        raise SparsaError("ternary codes must lie in {-1, 0, +1}", hint="ternarize the coefficients first")
    pad = (-flat.numel()) % 4
    f = torch.cat([flat, flat.new_zeros(pad)]).bitwise_and(3).reshape(-1, 4)  # -1 -> 0b11, +1 -> 0b01
    packed = f[:, 0] | (f[:, 1] << 2) | (f[:, 2] << 4) | (f[:, 3] << 6)
    return packed.to(torch.uint8)


def unpack_ternary(packed: Tensor, numel: int) -> Tensor:
    """Inverse of `pack_ternary`: the first `numel` codes as int8."""
    if packed.dtype != torch.uint8 or packed.numel() * 4 < numel:
        raise SparsaError(f"packed ternary tensor too short or not uint8 ({packed.dtype}, {packed.numel()} bytes "
                          f"for {numel} codes)", hint="the file is corrupt; re-export it")
    p = packed.to(torch.int16).unsqueeze(1)
    f = (p >> torch.tensor([0, 2, 4, 6], dtype=torch.int16)) & 3
    if bool((f == 2).any()):
        raise SparsaError("packed ternary data holds the invalid code 0b10", hint="the file is corrupt; re-export it")
    return (f - 4 * (f >> 1)).flatten()[:numel].to(torch.int8)


# ---------------------------------------------------------------------------------------------- the rule


def hybrid_finetune(model: nn.Module, train, *, epochs: int = PenniConfig.hybrid_epochs, lr: float = 0.001,
                    batch_size: int = 64, seed: int = 2, log=None) -> list[dict]:
    """Fine-tune a (pruned) PENNI model while its forward sees the hybrid 8-bit/ternary values;
    pruned coefficients stay exactly zero. CHOICE: ESCALATE retrains after quantizing, the seed gives
    no schedule; a few epochs at a low learning rate recover most of the ternary loss."""
    from sparsa.decompose.penni import finetune

    layers = [m for m in model.modules() if type(m) is PenniConv]
    masks = {f"{n}.coefs": m.coefs.detach().ne(0) for n, m in model.named_modules() if type(m) is PenniConv}
    for m in layers:
        m.hybrid_qat = True
    try:
        return finetune(model, train, epochs=epochs, lr=lr, batch_size=batch_size, masks=masks, seed=seed, log=log)
    finally:
        for m in layers:
            m.hybrid_qat = False


def quantize_hybrid(model: nn.Module, train=None, *, epochs: int = PenniConfig.hybrid_epochs, seed: int = 0,
                    log=None) -> dict:
    """ESCALATE on a PENNI model, in place: `epochs` of hybrid-aware fine-tuning on `train`, then
    `hybridize`. The one verb behind `sparsa decompose --hybrid-quant` and a recipe's
    `quantize` stage with `mode: hybrid`; `seed` is the run's seed (the fine-tuning uses seed + 2)."""
    if epochs > 0 and train is None:
        raise SparsaError(f"hybrid quantization fine-tunes {epochs} epochs and needs labelled training data",
                          hint="name the training data (the recipe's data.train, --data), or set hybrid_epochs: 0")
    tuned = hybrid_finetune(model, train, epochs=epochs, seed=seed + 2, log=log) if epochs > 0 else []
    model.eval()
    return {"finetune": tuned, "layers": hybridize(model), "storage": storage_bytes(model)}


# ---------------------------------------------------------------------------------------------- modules


class EscalateConv(PenniConv):
    """A PENNI conv stored as int8 basis (+ one scale) and 2-bit packed ternary coefficients."""

    def __init__(self, in_channels, out_channels, kernel_size, num_basis, stride=1, padding=0, dilation=1,
                 bias: bool = True, impl: str = "escalate"):
        super().__init__(in_channels, out_channels, kernel_size, num_basis, stride, padding, dilation, bias, impl)
        del self.basis, self.coefs  # replaced by integer buffers
        self.hybrid_qat = False
        n = self.out_channels * self.in_channels * self.num_basis
        self.register_buffer("basis_q", torch.zeros(self.num_basis, self.kernel_volume, dtype=torch.int8))
        self.register_buffer("basis_scale", torch.ones((), dtype=torch.float32))
        self.register_buffer("coefs_t2", torch.zeros(math.ceil(n / 4), dtype=torch.uint8))
        self._codes_key, self._codes = None, None

    def basis_kernels(self) -> Tensor:
        return self.basis_q.float() * self.basis_scale

    def codes(self) -> Tensor:
        """Ternary coefficient codes [C_out, C_in, d] (int8), unpacked once per loaded tensor."""
        key = (self.coefs_t2.data_ptr(), self.coefs_t2._version)
        if self._codes_key != key:
            n = self.out_channels * self.in_channels * self.num_basis
            self._codes = unpack_ternary(self.coefs_t2, n).reshape(self.out_channels, self.in_channels, self.num_basis)
            self._codes_key = key
        return self._codes

    def coefficients(self) -> Tensor:
        return self.codes().float()

    def effective_weights(self) -> dict[str, Tensor]:
        """The logical basis kernels and (ternary) coefficients."""
        return {"basis": self.basis_kernels(), "coefs": self.coefficients()}

    def hw_annotation(self) -> tuple[HwAnnotation, ...] | None:
        """8-bit basis, 2-bit ternary coefficient codes (zero codes: pruned); unpacking and the basis
        scale are the datapath."""
        return penni_annotations(self.impl, self.codes(), basis_extra={"weight_bits": 8, "fused_datapath": True},
                                 coefs_extra={"weight_bits": 2, "fused_datapath": True})

    def sparsa_shape(self) -> dict:
        return {**super().sparsa_shape(), "type": "EscalateConv"}

    @classmethod
    @torch.no_grad()
    def from_penni(cls, m: PenniConv) -> tuple["EscalateConv", dict]:
        """docs/algorithms.md §7: α_b folded into the basis, basis to symmetric int8 (max clipping), coefficients to sign(C)."""
        codes, alpha = ternarize(m.coefs.detach(), axis=2)  # alpha: one per basis kernel
        folded = alpha.view(-1, 1) * m.basis.detach().float()
        qp = choose_qparams(folded, bits=8, scheme="sym", clip="max")
        new = cls(m.in_channels, m.out_channels, m.kernel_size, m.num_basis, m.stride, m.padding, m.dilation,
                  bias=m.bias is not None)
        new.basis_q.copy_(quantize(folded, qp))
        new.basis_scale.copy_(qp.scale.float())
        new.coefs_t2 = pack_ternary(codes)
        if m.bias is not None:
            new.bias.copy_(m.bias.detach())
        stats = {"alpha": alpha.tolist(), "basis_scale": float(qp.scale), "nonzero": int(codes.ne(0).sum()),
                 "coefficients": codes.numel()}
        return new, stats


class Int8Layer(nn.Module):
    """A Conv/Linear whose weight is int8 with one scale per output channel (symmetric, max clipping)."""

    def __init__(self, op: str, weight_shape, bias: bool = True, stride=1, padding=0, dilation=1, groups: int = 1):
        super().__init__()
        if op not in ("linear", "conv1d", "conv2d", "conv3d"):
            raise SparsaError(f"Int8Layer cannot run op {op!r}", hint="linear or conv1d/2d/3d")
        self.op, self.weight_shape = op, [int(s) for s in weight_shape]
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.register_buffer("weight_q", torch.zeros(self.weight_shape, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(self.weight_shape[0], dtype=torch.float32))
        self.bias = nn.Parameter(torch.zeros(self.weight_shape[0])) if bias else None

    def weight(self) -> Tensor:
        return self.weight_q.float() * self.weight_scale.view(-1, *([1] * (len(self.weight_shape) - 1)))

    def effective_weights(self) -> dict[str, Tensor]:
        """The logical float weight (int8 codes times their per-channel scales)."""
        return {"weight": self.weight()}

    def hw_annotation(self) -> HwAnnotation:
        """int8 weights (per-channel scales are the datapath), as sparse as their codes."""
        d = density(self.weight_q)
        return HwAnnotation(weight_bits=8, weight_density=d, storage="unstructured" if d < 1.0 else "dense",
                            fused_datapath=True)

    def forward(self, x: Tensor) -> Tensor:
        if self.op == "linear":
            return F.linear(x, self.weight(), self.bias)
        conv = _CONV[int(self.op[4])]
        return conv(x, self.weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)

    def sparsa_shape(self) -> dict:
        pad = self.padding if isinstance(self.padding, str) else list(_as_tuple(self.padding))
        return {"type": "Int8Layer", "op": self.op, "weight_shape": self.weight_shape, "bias": self.bias is not None,
                "stride": list(_as_tuple(self.stride)), "padding": pad, "dilation": list(_as_tuple(self.dilation)),
                "groups": self.groups}

    @classmethod
    @torch.no_grad()
    def from_module(cls, m: nn.Module) -> "Int8Layer":
        if isinstance(m, nn.Linear):
            new = cls("linear", m.weight.shape, m.bias is not None)
        else:
            new = cls(f"conv{m.weight.dim() - 2}d", m.weight.shape, m.bias is not None, m.stride, m.padding,
                      m.dilation, m.groups)
        qp = choose_qparams(m.weight.detach(), bits=8, scheme="sym", clip="max", axis=0)
        new.weight_q.copy_(quantize(m.weight.detach(), qp))
        new.weight_scale.copy_(qp.scale.float())
        if m.bias is not None:
            new.bias.copy_(m.bias.detach())
        return new


def _as_tuple(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,)


def build_from_spec(spec: dict) -> nn.Module:
    """Empty EscalateConv / Int8Layer of the recorded shape (the loader fills the weights)."""
    if spec["type"] == "EscalateConv":
        pad = spec["padding"]
        return EscalateConv(spec["in"], spec["out"], tuple(spec["kernel_size"]), spec["basis"], tuple(spec["stride"]),
                            pad if isinstance(pad, str) else tuple(pad), tuple(spec["dilation"]), spec["bias"],
                            spec.get("impl", "escalate"))
    pad = spec["padding"]
    return Int8Layer(spec["op"], spec["weight_shape"], spec["bias"], tuple(spec["stride"]),
                     pad if isinstance(pad, str) else tuple(pad), tuple(spec["dilation"]), spec["groups"])


register_layer_kind("EscalateConv", build_from_spec)
register_layer_kind("Int8Layer", build_from_spec)
# their integer arithmetic branches on tensor values, which torch.fx cannot trace; nothing in them is pruned
register_opaque_module(EscalateConv)
register_opaque_module(Int8Layer)


# ---------------------------------------------------------------------------------------------- model level


def hybridize(model: nn.Module, *, others: str = "int8") -> dict:
    """Swap every PenniConv for its 8-bit-basis / ternary-coefficient EscalateConv, in place.

    others: "int8" also stores the remaining Conv/Linear weights as int8 per output channel;
    "float" leaves them float32. Returns a record (per layer α, scale, coefficient sparsity)."""
    if others not in ("int8", "float"):
        raise SparsaError(f"others={others!r}", hint="use 'int8' or 'float'")
    rec = {"layers": {}, "others": others, "skipped": {}}
    for name, m in list(model.named_modules()):
        if isinstance(m, EscalateConv | Int8Layer):
            continue
        if isinstance(m, PenniConv):
            new, stats = EscalateConv.from_penni(m)
            new.train(m.training)
            set_submodule(model, name, new)
            rec["layers"][name] = stats
        elif isinstance(m, PenniLinear):
            rec["skipped"][name] = "decomposed Linear kept float32 (hybrid storage covers convolutions)"
        elif others == "int8" and isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d) and m.padding_mode != "zeros":
                rec["skipped"][name] = f"padding_mode={m.padding_mode!r} kept float32"
                continue
            set_submodule(model, name, Int8Layer.from_module(m))
    if not rec["layers"]:
        raise SparsaError("the model has no decomposed convolutions to quantize",
                          hint="run the PENNI decomposition first (sparsa decompose ... --hybrid-quant)")
    nz = sum(s["nonzero"] for s in rec["layers"].values())
    tot = sum(s["coefficients"] for s in rec["layers"].values())
    rec["coefficient_sparsity"] = 1 - nz / max(1, tot)
    return rec


def storage_bytes(model: nn.Module) -> dict:
    """Bytes of the model's state dict by storage class (what safetensors writes, headers aside)."""
    out = {"basis_int8": 0, "coefs_ternary_2bit": 0, "weights_int8": 0, "scales_fp32": 0, "float32_other": 0}
    for name, t in model.state_dict().items():
        leaf = name.rpartition(".")[2]
        nb = t.numel() * t.element_size()
        if leaf == "basis_q":
            out["basis_int8"] += nb
        elif leaf == "coefs_t2":
            out["coefs_ternary_2bit"] += nb
        elif leaf == "weight_q":
            out["weights_int8"] += nb
        elif leaf in ("basis_scale", "weight_scale"):
            out["scales_fp32"] += nb
        else:
            out["float32_other"] += nb
    out["total"] = sum(out.values())
    return out
