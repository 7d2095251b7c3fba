"""Metrics: what a model costs (params, MACs, bytes, latency) and how faithful it is.

    count_params(model) / count_params(model, exclude_embeddings=True)
    count_macs(model, inputs) -> int          (torch.utils.flop_counter; MACs = FLOPs / 2,
                                               attention Q·Kᵀ and A·V included)
    model_bytes(model) -> int
    measure_latency(fn, warmup=5, runs=30, threads=None) -> {"median_ms", "p10_ms", "p90_ms", "runs", "threads"}
    measure_latency_pair(fn_a, fn_b, ...) -> (summary_a, summary_b), timed alternately
    measure_latency_blocks({name: fn}, rounds, warmup, runs, pause) -> {name: [ms]}, timed in blocks
    fidelity(model, reference, texts, tokenizer) -> {"cosine_mean", "cosine_min", ...}
    embed(model, texts, tokenizer) -> mean-pooled embeddings
    accuracy(model, dataset) -> float;  logit_agreement(model, reference, dataset) -> dict
"""

from sparsa.metrics.cost import count_macs, count_params, model_bytes
from sparsa.metrics.latency import measure_latency, measure_latency_blocks, measure_latency_pair
from sparsa.metrics.quality import accuracy, embed, fidelity, logit_agreement, predict_logits

__all__ = [
    "count_params", "count_macs", "model_bytes", "measure_latency", "measure_latency_pair", "measure_latency_blocks", "fidelity", "embed", "accuracy",
    "logit_agreement", "predict_logits",
]
