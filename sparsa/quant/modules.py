"""`QuantLinear`: a Linear layer that really holds integer weights, and sparsa's integer simulation.

The weight is stored as integer codes (int8 for sym/ternary, uint8 for asym) plus float32 scales
(and uint8 zero points for asym); nothing in float32 is kept for it. The forward pass:

- activations "none": dequantize the weight and run a float matmul (weight-only quantization);
- activations "dynamic" / "static": quantize the input to integer codes (dynamic: one scale per
  call from the input's own range, exactly ONNX `DynamicQuantizeLinear` for asym; static: the
  calibrated scale), accumulate `(q_x - z_x) · (q_w - z_w)ᵀ` exactly (the integer products are
  summed in float64, which is exact below 2^53, i.e. the int32 accumulator of an integer kernel),
  then rescale in float32 as `acc · (s_x · s_w) + bias`, the order ONNX Runtime's
  MatMulIntegerToFloat / DynamicQuantizeMatMul use.

Bias stays float32 (CHOICE, see docs/quantization.md: ORT adds it after the rescale).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sparsa.models.hw_annotation import HwAnnotation, density
from sparsa.quant.primitives import QParams, choose_qparams, dequantize, quantize, qrange


class QuantLinear(nn.Module):
    """Linear layer with integer weights (see module docstring)."""

    def __init__(self, in_features: int, out_features: int, *, bits: int, scheme: str, per_channel: bool,
                 has_bias: bool, activations: str = "none", act_bits: int = 8, act_scheme: str = "sym",
                 smooth: bool = False):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.scheme, self.per_channel = bits, scheme, per_channel
        self.activations, self.act_bits, self.act_scheme = activations, act_bits, act_scheme
        wdtype = torch.uint8 if scheme == "asym" else torch.int8
        nscale = out_features if per_channel else 1
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=wdtype))
        self.register_buffer("w_scale", torch.ones(nscale))
        self.register_buffer("w_zero_point", torch.zeros(nscale, dtype=torch.uint8) if scheme == "asym" else None)
        self.register_buffer("bias", torch.zeros(out_features) if has_bias else None)
        # SmoothQuant: the input is multiplied by this per-channel vector before quantization
        self.register_buffer("smooth_inv", torch.ones(in_features) if smooth else None)
        static = activations == "static"
        self.register_buffer("a_scale", torch.ones(()) if static else None)
        self.register_buffer("a_zero_point", torch.zeros((), dtype=torch.uint8) if static and act_scheme == "asym" else None)

    # --- construction ---------------------------------------------------------------------
    @classmethod
    def from_float(cls, linear: nn.Linear, spec, *, inputs: Tensor | None = None, act_qp: QParams | None = None,
                   smooth_scale: Tensor | None = None):
        """Quantize `linear`'s weight per `spec` (a LayerSpec); `inputs` feeds the output-error search.

        smooth_scale: SmoothQuant's per-input-channel s (the weight's columns are multiplied by s,
        the input by 1/s at run time); `inputs` must then already be divided by s."""
        w = linear.weight.detach().float()
        if smooth_scale is not None:
            w = w * smooth_scale.view(1, -1)
        axis = 0 if spec.per_channel else None
        ternary = spec.bits == "ternary"
        use_inputs = inputs if (spec.clip == "search" and spec.objective == "output") else None
        qp = choose_qparams(w, spec.bits, spec.scheme, spec.clip, axis, percentile=spec.percentile, inputs=use_inputs)
        m = cls(linear.in_features, linear.out_features, bits=2 if ternary else spec.bits, scheme=qp.scheme,
                per_channel=spec.per_channel, has_bias=linear.bias is not None, activations=spec.activations,
                act_bits=spec.act_bits, act_scheme=spec.a_scheme, smooth=smooth_scale is not None)
        if smooth_scale is not None:
            m.smooth_inv.copy_(1.0 / smooth_scale)
        m.qweight.copy_(quantize(w, qp))
        m.w_scale.copy_(qp.scale.reshape(-1))
        if qp.zero_point is not None:
            m.w_zero_point.copy_(qp.zero_point.reshape(-1).to(torch.uint8))
        if linear.bias is not None:
            m.bias.copy_(linear.bias.detach().float())
        if spec.activations == "static":
            if act_qp is None:
                raise ValueError("static activation quantization needs calibrated act_qp")
            m.a_scale.copy_(act_qp.scale.reshape(()))
            if act_qp.zero_point is not None:
                m.a_zero_point.copy_(act_qp.zero_point.reshape(()).to(torch.uint8))
        return m.to(linear.weight.device)

    # --- parameters as QParams --------------------------------------------------------------
    @property
    def weight_qparams(self) -> QParams:
        axis = 0 if self.per_channel else None
        scale = self.w_scale if self.per_channel else self.w_scale.reshape(())
        zp = None
        if self.w_zero_point is not None:
            zp = self.w_zero_point.to(torch.int32)
            zp = zp if self.per_channel else zp.reshape(())
        return QParams(scale, zp, self.bits, self.scheme, axis)

    def static_act_qparams(self) -> QParams | None:
        if self.activations != "static":
            return None
        zp = None if self.a_zero_point is None else self.a_zero_point.to(torch.int32)
        return QParams(self.a_scale, zp, self.act_bits, self.act_scheme, None)

    def dequantized_weight(self) -> Tensor:
        return dequantize(self.qweight, self.weight_qparams)

    @property
    def weight(self) -> Tensor:  # read-only float view, for code that inspects `.weight`
        return self.dequantized_weight()

    # --- integer simulation -------------------------------------------------------------------
    def act_qparams(self, x: Tensor) -> QParams:
        """Static: the calibrated params; dynamic: from this input's range (ONNX DynamicQuantizeLinear)."""
        if self.activations == "static":
            return self.static_act_qparams()
        return choose_qparams(x.detach(), self.act_bits, self.act_scheme, "max", None)

    def forward(self, x: Tensor) -> Tensor:
        if self.smooth_inv is not None:
            x = x * self.smooth_inv.to(x.dtype)
        if self.activations == "none":
            return nn.functional.linear(x, self.dequantized_weight().to(x.dtype), self.bias)
        aq = self.act_qparams(x)
        qx = quantize(x, aq).double()
        if aq.zero_point is not None:
            qx = qx - float(aq.zero_point)
        qw = self.qweight.double()
        if self.w_zero_point is not None:
            qw = qw - self.w_zero_point.double().view(-1, 1)
        acc = (qx @ qw.T).float()  # exact integer accumulator (|acc| < 2^31 for int8 codes, K < 2^16)
        y = acc * (aq.scale.float() * self.w_scale)
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype)

    # --- what the hardware sees ------------------------------------------------------------
    def effective_weights(self) -> dict[str, Tensor]:
        """The logical float weight (dequantized codes), for size and sparsity accounting."""
        return {"weight": self.dequantized_weight()}

    def hw_annotation(self) -> HwAnnotation:
        """Weights stored at `bits` (zero codes of a pruned sym layer, or the zero point of an asym one,
        are its zeros); the activation operand's bits when the layer quantizes its input."""
        zp = 0 if self.w_zero_point is None else self.w_zero_point.view(-1, *([1] * (self.qweight.dim() - 1)))
        d = density(self.qweight, zp)
        return HwAnnotation(weight_bits=self.bits, act_bits=self.act_bits if self.activations != "none" else None,
                            weight_density=d, storage="unstructured" if d < 1.0 else "dense", fused_datapath=True)

    def sparsa_shape(self) -> dict:
        """What a model folder records to rebuild this layer (`sparsa.models.layer_kinds`)."""
        return {"type": "QuantLinear", "in": self.in_features, "out": self.out_features, "bits": self.bits,
                "scheme": self.scheme, "per_channel": self.per_channel, "has_bias": self.bias is not None,
                "activations": self.activations, "act_bits": self.act_bits, "act_scheme": self.act_scheme,
                "smooth": self.smooth_inv is not None}

    @classmethod
    def from_shape(cls, spec: dict) -> "QuantLinear":
        """An empty layer of the recorded `sparsa_shape()`; its codes and scales are loaded afterwards."""
        ok = (spec.get("bits") in range(2, 9) and spec.get("scheme") in ("sym", "asym")
              and spec.get("activations") in ("none", "dynamic", "static") and spec.get("act_bits") in range(2, 9)
              and spec.get("act_scheme") in ("sym", "asym") and all(type(spec.get(k)) is int for k in ("in", "out")))
        if not ok:
            from sparsa.errors import SparsaError

            raise SparsaError(f"a QuantLinear record is malformed: {spec}", hint="the model folder is corrupt; re-create it")
        return cls(spec["in"], spec["out"], bits=spec["bits"], scheme=spec["scheme"], per_channel=spec["per_channel"],
                   has_bias=spec["has_bias"], activations=spec["activations"], act_bits=spec["act_bits"],
                   act_scheme=spec["act_scheme"], smooth=spec.get("smooth", False))

    # --- size -----------------------------------------------------------------------------
    def weight_format(self) -> str:
        """How `save_quantized` stores the codes: "dense" (every code packed at `bits` bits) or
        "bitmap" (a 1-bit nonzero mask + the nonzero codes packed at `bits` bits), whichever is
        smaller. Bitmap wins for pruned (sparse) symmetric weights below (1 - 1/bits) density;
        asymmetric codes have no fixed zero code and stay dense."""
        n = self.in_features * self.out_features
        if self.scheme == "asym":
            return "dense"
        nnz = int(torch.count_nonzero(self.qweight))
        return "bitmap" if _bitmap_bytes(n, nnz, self.bits) < math.ceil(n * self.bits / 8) else "dense"

    def storage_bytes(self, float_size: int = 4) -> dict:
        """Real bytes: weights packed at `bits` bits (as a nonzero bitmap + nonzero codes when that is
        smaller, see `weight_format`), uint8 zero points; scales, bias and smoothing factors at
        `float_size` bytes a value (4: float32, 2: float16 storage)."""
        n = self.in_features * self.out_features
        dense = math.ceil(n * self.bits / 8)
        f = float_size
        out = {
            "weight": dense if self.weight_format() == "dense"
            else _bitmap_bytes(n, int(torch.count_nonzero(self.qweight)), self.bits),
            "scale": self.w_scale.numel() * f + (f if self.a_scale is not None else 0),
            "zero_point": (self.w_zero_point.numel() if self.w_zero_point is not None else 0)
            + (1 if self.a_zero_point is not None else 0),
            "bias": self.bias.numel() * f if self.bias is not None else 0,
            "smooth": self.smooth_inv.numel() * f if self.smooth_inv is not None else 0,
        }
        return out

    def extra_repr(self) -> str:
        gran = "per-channel" if self.per_channel else "per-tensor"
        return (f"in={self.in_features}, out={self.out_features}, w={self.bits}b {self.scheme} {gran}, "
                f"act={self.activations}" + (f" {self.act_bits}b {self.act_scheme}" if self.activations != "none" else ""))


def _bitmap_bytes(n: int, nnz: int, bits: int) -> int:
    return math.ceil(n / 8) + math.ceil(nnz * bits / 8)


def code_range(bits: int, scheme: str) -> tuple[int, int]:
    return qrange(bits, scheme)
