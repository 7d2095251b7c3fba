"""SmoothQuant (Xiao et al. 2023) laid out on a BERT-family encoder so that the integer graph stays fused.

Per input channel j, s_j = max|x_j|^a / max|W_:,j|^(1-a) (`smooth_scale`): the input is divided by s,
the consumer's weight columns multiplied by s, which moves activation outliers into the per-channel
weight scales. Where the smoothing goes, per layer of the encoder:

- attention-out (input: softmax·V): 1/s is folded into the V projection's output rows and bias.
  The context is linear in V per channel, so this is an exact float transform with no run-time op.
- Q, K, V (input: the previous LayerNorm): one s shared by the three (from the max over their
  weights), so ONNX Runtime still fuses them into one QAttention; one run-time Mul by 1/s.
- FFN-in (input: attention LayerNorm) and FFN-out (input: GELU): a run-time Mul by 1/s each.
  A post-LN BERT's LayerNorm output is also the residual stream, so folding 1/s into the
  LayerNorm would change the residual too; the Mul is the exact form (export inserts it after
  ONNX Runtime's fusions, in front of the integer op).

CHOICE (measured, bench/quantization.py --section ort): for MiniLM W7 with dynamic activations the
calibration search picks a=0.5 for Q/K/V, attention-out and FFN-in with FFN-out at its own a=0.7
(calibration cosine 0.9972 vs 0.9919 unsmoothed; FFN-out at a<=0.5 hurts: 0.89-0.99).
`QuantConfig.smooth` stays None (off) by default: the best strength is model-specific.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from sparsa.errors import SparsaError

_QKV = ("attention.self.query", "attention.self.key", "attention.self.value")
_OUT = "attention.output.dense"


def smooth_scale(act_absmax: Tensor, weight: Tensor, alpha: float) -> Tensor:
    """s_j = max|x_j|^a / max|W_:,j|^(1-a) (floored at 1e-5 so no channel divides by zero).

    weight: [out, in] (several layers reading the same input: their weights stacked on dim 0)."""
    if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
        raise SparsaError(f"smoothing strength alpha={alpha!r} must be in [0, 1]", hint="e.g. 0.5")
    if act_absmax.shape[-1] != weight.shape[-1]:
        raise SparsaError(f"activation statistics have {act_absmax.shape[-1]} channels, the weight {weight.shape[-1]} inputs")
    a = act_absmax.float().clamp(min=1e-5)
    w = weight.detach().float().abs().amax(0).clamp(min=1e-5)
    return (a.pow(alpha) / w.pow(1.0 - alpha)).clamp(min=1e-5)


def bert_layer_prefixes(module: nn.Module) -> list[str]:
    """'encoder.layer.<i>' prefixes of a BERT-layout encoder (Q/K/V, attention-out present), in order."""
    names = {n for n, _ in module.named_modules()}
    pref = sorted({m.group(1) for n in names if (m := re.match(r"(.*?layer\.\d+)\.attention\.self\.query$", n))},
                  key=lambda p: int(p.rsplit(".", 1)[1]))
    return [p for p in pref if all(f"{p}.{k}" in names for k in (*_QKV, _OUT))]


@torch.no_grad()
def fold_into_value_(module: nn.Module, prefix: str, s: Tensor) -> None:
    """Context / s via V's rows and bias, attention-out weight columns · s: the layer's output is unchanged."""
    v = module.get_submodule(f"{prefix}.{_QKV[2]}")
    o = module.get_submodule(f"{prefix}.{_OUT}")
    if not (isinstance(v, nn.Linear) and isinstance(o, nn.Linear)):
        raise SparsaError(f"{prefix}: folding needs the float V and attention-out Linears",
                          hint="smooth before quantizing (quantize_ does this when smooth_fold=True)")
    if v.out_features != o.in_features or s.numel() != o.in_features:
        raise SparsaError(f"{prefix}: V has {v.out_features} outputs, attention-out {o.in_features} inputs, s {s.numel()}")
    s = s.to(v.weight.dtype)
    v.weight.div_(s.view(-1, 1))
    if v.bias is not None:
        v.bias.div_(s)
    o.weight.mul_(s.view(1, -1))


def plan_bert_smoothing(module: nn.Module, specs: dict, stats: dict) -> tuple[dict[str, Tensor], list[str]]:
    """Shared Q/K/V scales and the attention-out folds for the layers in `specs` (name -> LayerSpec)
    that ask for smoothing. Folds are applied to `module` in place (it must still be float there).

    Returns ({layer: s} for run-time smoothing, [attention-out layers smoothed by folding]).
    """
    prefixes = bert_layer_prefixes(module)
    if not prefixes:
        raise SparsaError("smooth_fold needs a BERT-layout encoder (layer.<i>.attention.self.query/key/value, "
                          "attention.output.dense)", hint="use smooth_fold=False (a run-time Mul per layer)")
    want = {n: s.smooth for n, s in specs.items() if s.smooth is not None}
    scales, folded = {}, []
    for p in prefixes:
        qkv = [f"{p}.{k}" for k in _QKV]
        alphas = {want.get(n) for n in qkv}
        if alphas != {None}:
            if len(alphas) != 1:
                raise SparsaError(f"{p}: Q, K and V read one tensor and share one smoothing; got {sorted(map(str, alphas))}",
                                  hint="give query, key and value the same smooth value")
            w = torch.cat([module.get_submodule(n).weight for n in qkv])
            s = smooth_scale(stats[qkv[0]].absmax, w, want[qkv[0]])
            scales.update({n: s for n in qkv})
        o = f"{p}.{_OUT}"
        if want.get(o) is not None:
            fold_into_value_(module, p, smooth_scale(stats[o].absmax, module.get_submodule(o).weight, want[o]))
            folded.append(o)
    for n, a in want.items():  # every other smoothed layer (FFN-in, FFN-out, ...): its own s, run-time Mul
        if n not in scales and n not in folded:
            scales[n] = smooth_scale(stats[n].absmax, module.get_submodule(n).weight, a)
    return scales, folded


def smoothing_fields(loaded, alpha: float | None, ffn_out: float | None) -> dict:
    """QuantConfig fields for SmoothQuant at strength `alpha` on a loaded model: the BERT layout
    (`smooth_fold`) for BERT-family encoders, and FFN-out at its own strength `ffn_out` (None: not
    smoothed; its input comes from GELU, where a smaller migration hurts). Exact FFN-out names come
    from the family adapter: a glob such as '*.output.dense' would also hit attention-out.

    `ffn_out` without `alpha` smooths the FFN-out layers only: one run-time Mul per layer instead of
    three (MiniLM W8: held-out cosine 0.9953 vs 0.9939 unsmoothed and 0.9979 fully smoothed;
    BENCHMARKS.md, INT8 at the ceiling)."""
    if alpha is None and ffn_out is None:
        return {}
    overrides = {g.fc2: {"smooth": ffn_out} for g in loaded.adapter.ffn_groups()} if ffn_out is not None else {}
    return {"smooth": alpha, "smooth_fold": loaded.family == "bert", "overrides": overrides}
