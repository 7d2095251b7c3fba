"""Pure quantization functions on tensors (docs/algorithms.md §4, §7).

Everything here is stateless: `choose_qparams` picks scale (and zero point) for a tensor,
`quantize` / `dequantize` map between float and integer codes, `fake_quant` does both,
`ternarize` gives ESCALATE's {-1, 0, +1} codes with one scale per group.

Conventions
- Symmetric ("bias-free"): narrow range `[-(2^(b-1)-1), 2^(b-1)-1]`, no zero point at all
  (`QParams.zero_point is None`), codes are int8.
- Asymmetric ("with offset"): `[0, 2^b - 1]` with an integer zero point, codes are uint8.
- Per tensor (`axis=None`) or per channel along `axis` (scale is then 1-D, one per channel).
- Rounding is round-half-to-even (torch.round), the same rule as ONNX QuantizeLinear, so
  sparsa's integer simulation and ONNX Runtime produce the same codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from sparsa.errors import SparsaError

VALID_BITS = (2, 3, 4, 5, 6, 7, 8)
VALID_SCHEMES = ("sym", "asym")
VALID_CLIPS = ("max", "percentile", "search")
# docs/algorithms.md §4: alpha grid 0.30, 0.31, ..., 1.00 (71 values), searched from the top so ties go to the larger alpha
SEARCH_ALPHAS = tuple(round(1.00 - 0.01 * i, 2) for i in range(71))
DEFAULT_PERCENTILE = 99.99
# beyond this many values, percentile/search statistics are taken on a fixed-seed subsample (+ exact extremes)
_MAX_STAT_VALUES = 1 << 20

Scheme = Literal["sym", "asym", "ternary"]
Clip = Literal["max", "percentile", "search"]


@dataclass(frozen=True)
class QParams:
    """Quantization parameters of one tensor.

    scale: 0-d (per tensor) or 1-D float32 tensor (one per channel along `axis`).
    zero_point: None for symmetric and ternary schemes; int32 tensor shaped like `scale` for asym.
    bits: storage bit width (ternary is stored in 2 bits).
    """

    scale: Tensor
    zero_point: Tensor | None
    bits: int
    scheme: Scheme
    axis: int | None = None

    @property
    def qmin(self) -> int:
        return qrange(self.bits, self.scheme)[0]

    @property
    def qmax(self) -> int:
        return qrange(self.bits, self.scheme)[1]

    @property
    def dtype(self) -> torch.dtype:
        return torch.uint8 if self.scheme == "asym" else torch.int8

    def to_dict(self) -> dict:
        return {
            "scale": self.scale.tolist(),
            "zero_point": None if self.zero_point is None else self.zero_point.tolist(),
            "bits": self.bits,
            "scheme": self.scheme,
            "axis": self.axis,
        }


# --------------------------------------------------------------------------- validation


def check_bits(bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in VALID_BITS:
        raise SparsaError(
            f"unsupported bit width {bits!r}",
            hint=f"use an integer in {VALID_BITS[0]}..{VALID_BITS[-1]}, or ternarize() / bits='ternary' for weights",
        )
    return bits


def check_scheme(scheme) -> str:
    if scheme not in VALID_SCHEMES:
        raise SparsaError(f"unsupported scheme {scheme!r}", hint=f"use one of {', '.join(VALID_SCHEMES)}")
    return scheme


def check_clip(clip) -> str:
    if clip not in VALID_CLIPS:
        raise SparsaError(f"unsupported clipping method {clip!r}", hint=f"use one of {', '.join(VALID_CLIPS)}")
    return clip


def qrange(bits: int, scheme: str) -> tuple[int, int]:
    """Integer code range: sym is narrow (symmetric grid), asym is the full unsigned range."""
    if scheme == "ternary":
        return -1, 1
    if scheme == "sym":
        m = 2 ** (bits - 1) - 1
        return -m, m
    return 0, 2**bits - 1


def _check_axis(x: Tensor, axis: int | None) -> int | None:
    if axis is None:
        return None
    if not -x.dim() <= axis < x.dim():
        raise SparsaError(
            f"axis={axis} is out of range for a tensor of shape {tuple(x.shape)}",
            hint="give the channel dimension (0 for a Linear/Conv weight's output channels) or None for per tensor",
        )
    return axis % x.dim()


# --------------------------------------------------------------------------- helpers


def _channels_first(x: Tensor, axis: int | None) -> Tensor:
    """View x as [C, N] (C=1 for per tensor)."""
    x = x.detach().float()
    if axis is None:
        return x.reshape(1, -1)
    return x.movedim(axis, 0).reshape(x.shape[axis], -1)


def _bshape(qp_scale: Tensor, x: Tensor, axis: int | None) -> Tensor:
    """Reshape a per-channel vector so it broadcasts against x along axis."""
    if axis is None or qp_scale.dim() == 0:
        return qp_scale
    shape = [1] * x.dim()
    shape[axis] = -1
    return qp_scale.reshape(shape)


def _subsample(rows: Tensor) -> Tensor:
    """At most _MAX_STAT_VALUES values per row (fixed seed), always keeping each row's min and max."""
    n = rows.shape[1]
    if n <= _MAX_STAT_VALUES:
        return rows
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(n, generator=g)[: _MAX_STAT_VALUES - 2]
    return torch.cat([rows[:, idx], rows.amin(1, keepdim=True), rows.amax(1, keepdim=True)], 1)


def _params_from_range(lo: Tensor, hi: Tensor, bits: int, scheme: str) -> tuple[Tensor, Tensor | None]:
    """Scale (and zero point) from the clipping range, exactly as docs/algorithms.md §4 writes it."""
    qmin, qmax = qrange(bits, scheme)
    if scheme == "sym":
        c = torch.maximum(hi.abs(), lo.abs())
        scale = torch.where(c > 0, c / qmax, torch.ones_like(c))
        return scale, None
    lo = torch.clamp(lo, max=0.0)
    hi = torch.clamp(hi, min=0.0)
    span = hi - lo
    scale = torch.where(span > 0, span / (qmax - qmin), torch.ones_like(span))
    zp = torch.clamp(torch.round(-lo / scale), qmin, qmax).to(torch.int32)
    return scale, zp


def _qdq_rows(rows: Tensor, scale: Tensor, zp: Tensor | None, qmin: int, qmax: int) -> Tensor:
    """Quantize-dequantize [.., C, N] rows with [.., C, 1] params."""
    if zp is None:
        return torch.clamp(torch.round(rows / scale), qmin, qmax) * scale
    z = zp.to(rows.dtype)
    return (torch.clamp(torch.round(rows / scale) + z, qmin, qmax) - z) * scale


# --------------------------------------------------------------------------- choose_qparams


def choose_qparams(
    x: Tensor,
    bits: int | str = 8,
    scheme: str = "sym",
    clip: str = "max",
    axis: int | None = None,
    *,
    percentile: float = DEFAULT_PERCENTILE,
    alphas: tuple[float, ...] = SEARCH_ALPHAS,
    inputs: Tensor | None = None,
) -> QParams:
    """Pick quantization parameters for `x`.

    bits: 2..8, or "ternary" (weights only; ESCALATE's codes, see `ternarize`).
    scheme: "sym" (narrow range, no zero point) or "asym" (uint range + zero point).
    clip: "max" (range = extremes), "percentile" (range = the `percentile`-th percentile of |x|
      for sym, of x at both tails for asym), "search" (range = alpha * max over `alphas`,
      alpha minimising the mean squared quantization error; ties go to the larger alpha).
    axis: None for one scale per tensor, else one scale per index along `axis`.
    inputs: only with clip="search" on a 2-D Linear weight [out, in]: calibration inputs
      [..., in]; the search then minimises the layer's output error `||X Wᵀ − X Ŵᵀ||²`
      (per output channel when axis=0) instead of the weight's own error.
    """
    if bits == "ternary":
        a, ax = ternary_scale(x, axis=axis)
        return QParams(a, None, 2, "ternary", ax)
    bits = check_bits(bits)
    scheme = check_scheme(scheme)
    clip = check_clip(clip)
    axis = _check_axis(x, axis)
    if x.numel() == 0:
        raise SparsaError("cannot choose quantization parameters for an empty tensor", hint="pass a non-empty tensor")
    if not torch.isfinite(x).all():
        raise SparsaError("tensor contains NaN or infinite values", hint="check the model / calibration data")
    rows = _channels_first(x, axis)  # [C, N]
    lo, hi = rows.amin(1), rows.amax(1)

    if clip == "percentile":
        if not 0.0 < percentile <= 100.0:
            raise SparsaError(f"percentile={percentile} is out of range (0, 100]", hint="e.g. 99.99")
        sub = _subsample(rows)
        q = percentile / 100.0
        if scheme == "sym":
            hi = torch.quantile(sub.abs(), q, dim=1)
            lo = -hi
        else:
            hi = torch.quantile(sub, q, dim=1)
            lo = torch.quantile(sub, 1.0 - q, dim=1)
    elif clip == "search":
        if inputs is not None:
            alpha = _search_alpha_output(x, inputs, lo, hi, bits, scheme, axis, alphas)
        else:
            alpha = _search_alpha_tensor(_subsample(rows), lo, hi, bits, scheme, alphas)
        lo, hi = lo * alpha, hi * alpha

    scale, zp = _params_from_range(lo, hi, bits, scheme)
    if axis is None:
        scale = scale.reshape(())
        zp = None if zp is None else zp.reshape(())
    return QParams(scale, zp, bits, scheme, axis)


def _alpha_tensor(alphas) -> Tensor:
    a = torch.tensor(sorted(set(float(v) for v in alphas), reverse=True), dtype=torch.float32)
    if len(a) == 0 or (a <= 0).any() or (a > 1).any():
        raise SparsaError(f"search alphas must lie in (0, 1], got {list(alphas)}", hint="the default grid is 0.30..1.00")
    return a  # descending: argmin's first minimum is the larger alpha


def _search_alpha_tensor(rows: Tensor, lo: Tensor, hi: Tensor, bits: int, scheme: str, alphas) -> Tensor:
    """Per-row alpha minimising mean((x - x̂)²) on the rows themselves."""
    a = _alpha_tensor(alphas)
    qmin, qmax = qrange(bits, scheme)
    C, N = rows.shape
    errs = torch.empty(len(a), C)
    # chunk over alphas to bound memory at ~64 MB of float32
    chunk = max(1, int((1 << 24) // max(1, C * N)))
    for i in range(0, len(a), chunk):
        ac = a[i : i + chunk].view(-1, 1, 1)
        scale, zp = _params_from_range(lo.view(1, C, 1) * ac, hi.view(1, C, 1) * ac, bits, scheme)
        xh = _qdq_rows(rows.unsqueeze(0), scale, zp, qmin, qmax)
        errs[i : i + len(ac)] = (rows.unsqueeze(0) - xh).pow(2).mean(2)
    return a[errs.argmin(0)]


def _search_alpha_output(w, inputs, lo, hi, bits, scheme, axis, alphas) -> Tensor:
    """Per-row alpha minimising the Linear layer's output error on calibration inputs."""
    if w.dim() != 2 or axis not in (None, 0):
        raise SparsaError(
            "output-error clipping search needs a 2-D Linear weight [out, in] quantized per tensor or per output channel (axis=0)",
            hint="drop `inputs` to search on the weight's own error",
        )
    if inputs.shape[-1] != w.shape[1]:
        raise SparsaError(
            f"calibration inputs have last dimension {inputs.shape[-1]}, the layer expects {w.shape[1]}",
            hint="pass the activations that enter this layer, shaped [..., in_features]",
        )
    X = inputs.detach().float().reshape(-1, w.shape[1])
    if X.shape[0] > 4096:  # fixed subsample keeps the search cheap
        X = X[torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(0))[:4096]]
    # err(D) = ||X Dᵀ||² = rowwise D H Dᵀ with H = XᵀX: use whichever is cheaper
    use_gram = X.shape[0] > w.shape[1]
    H = X.T @ X if use_gram else None
    a = _alpha_tensor(alphas)
    qmin, qmax = qrange(bits, scheme)
    W = w.detach().float()
    rows = W if axis == 0 else W.reshape(1, -1)
    C = rows.shape[0]
    errs = torch.empty(len(a), C)
    for i, al in enumerate(a):
        scale, zp = _params_from_range(lo.view(C, 1) * al, hi.view(C, 1) * al, bits, scheme)
        D = (W - _qdq_rows(rows, scale, zp, qmin, qmax).reshape(W.shape))
        e = ((D @ H) * D).sum(1) if use_gram else (X @ D.T).pow(2).sum(0)
        errs[i] = e if axis == 0 else e.sum().reshape(1)
    return a[errs.argmin(0)]


# --------------------------------------------------------------------------- quantize / dequantize


def quantize(x: Tensor, qp: QParams) -> Tensor:
    """Float -> integer codes (int8 for sym/ternary, uint8 for asym)."""
    if qp.scheme == "ternary":
        return torch.sign(x.detach()).to(torch.int8)
    s = _bshape(qp.scale, x, qp.axis)
    q = torch.round(x.detach().float() / s)
    if qp.zero_point is not None:
        q = q + _bshape(qp.zero_point, x, qp.axis).float()
    return torch.clamp(q, qp.qmin, qp.qmax).to(qp.dtype)


def dequantize(q: Tensor, qp: QParams) -> Tensor:
    """Integer codes -> float32: scale * (q - zero_point)."""
    qf = q.float()
    if qp.zero_point is not None:
        qf = qf - _bshape(qp.zero_point, q, qp.axis).float()
    return qf * _bshape(qp.scale, q, qp.axis)


def fake_quant(x: Tensor, qp: QParams) -> Tensor:
    """Quantize then dequantize, in x's dtype; gradients pass straight through (STE)."""
    xq = dequantize(quantize(x, qp), qp).to(x.dtype)
    return x + (xq - x).detach() if x.requires_grad else xq


# --------------------------------------------------------------------------- ternary (ESCALATE docs/algorithms.md §7)


def ternary_scale(x: Tensor, axis: int | None = None) -> tuple[Tensor, int | None]:
    """alpha = mean |x| over the non-zero entries of each group (1.0 for an all-zero group)."""
    axis = _check_axis(x, axis)
    rows = _channels_first(x, axis).abs()
    nz = (rows != 0).sum(1)
    alpha = torch.where(nz > 0, rows.sum(1) / nz.clamp(min=1), torch.ones(rows.shape[0]))
    return (alpha.reshape(()) if axis is None else alpha), axis


def ternarize(x: Tensor, axis: int | None = None) -> tuple[Tensor, Tensor]:
    """ESCALATE's ternary coefficients: codes = sign(x) in {-1, 0, +1} (int8), alpha per group.

    x ≈ alpha * codes. Zeros stay zero (pruned coefficients), every non-zero keeps its sign.
    """
    alpha, ax = ternary_scale(x, axis)
    return torch.sign(x.detach()).to(torch.int8), alpha


def quant_error(x: Tensor, qp: QParams) -> float:
    """Mean squared error of quantize->dequantize (the search criterion)."""
    return float((x.detach().float() - dequantize(quantize(x, qp), qp)).pow(2).mean())
