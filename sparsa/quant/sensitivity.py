"""Which quantized layers cost the most quality: leave one layer's activations in float at a time
and measure the recovery on calibration data (never on the evaluation set).

Used to pick the few layers that mixed precision keeps in float (`QuantConfig.overrides`).
"""

from __future__ import annotations

import torch

from sparsa.errors import SparsaError
from sparsa.quant.api import quant_layers


@torch.no_grad()
def layer_sensitivity(quantized, reference, texts: list[str], candidates: list[str] | None = None) -> list[dict]:
    """Embedding-cosine gain of keeping each candidate layer's input in float (text models).

    quantized: a LoadedModel after `quantize_` with activations "dynamic" or "static";
    reference: the float LoadedModel; texts: calibration sentences.
    Returns [{"layer", "gain"}] sorted by gain, largest first.
    """
    from sparsa.metrics import fidelity

    qls = quant_layers(quantized)
    candidates = candidates or list(qls)
    unknown = [c for c in candidates if c not in qls]
    if unknown:
        raise SparsaError(f"not quantized layers: {unknown[:3]}", hint=f"choose among {list(qls)[:4]} ...")
    tok = quantized.tokenizer
    if tok is None:
        raise SparsaError("layer_sensitivity measures embedding fidelity and needs a text model")
    # batch 1: dynamic activation ranges are per call, so padded batches would mix sentences
    base = fidelity(quantized, reference, texts, tok, batch_size=1)["cosine_mean"]
    out = []
    for name in candidates:
        q = qls[name]
        mode = q.activations
        q.activations = "none"  # weight stays integer; only the activation rounding is removed
        try:
            c = fidelity(quantized, reference, texts, tok, batch_size=1)["cosine_mean"]
        finally:
            q.activations = mode
        out.append({"layer": name, "gain": c - base})
    return sorted(out, key=lambda d: -d["gain"])
