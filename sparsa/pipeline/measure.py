"""Measurements the pipeline takes after each stage: size, compute, quality, per-layer sparsity, latency."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

import torch

from sparsa.models.hw_annotation import logical_weights
from sparsa.pipeline.state import PipelineState


@contextlib.contextmanager
def attention_removed(state: PipelineState):
    """Temporarily take the installed attention method out (structural counts, CPU latency)."""
    att = state.attention
    model = state.loaded.model
    if att is None:
        yield
        return
    from sparsa.attention import install, uninstall
    uninstall(model)
    try:
        yield
    finally:  # back onto the current model (a stage may have replaced it)
        install(state.loaded.model, att["method"], **att["options"])


def example_inputs(state: PipelineState, loaded=None, batch: int = 1) -> dict:
    loaded = loaded or state.loaded
    return loaded.example_inputs(batch=batch, seq_len=state.recipe.evaluation.seq_len)


def size_and_compute(state: PipelineState, loaded=None) -> dict:
    from sparsa import metrics
    loaded = loaded or state.loaded
    ctx = attention_removed(state) if loaded is state.loaded else contextlib.nullcontext()
    with ctx, torch.no_grad():
        macs = int(metrics.count_macs(loaded.model, example_inputs(state, loaded)))
    weights = effective_weights(loaded.model)
    out = {
        "params": int(sum(t.numel() for t in weights.values())),
        "nonzero_params": int(sum(int((t != 0).sum()) for t in weights.values())),
        "bytes": int(metrics.model_bytes(loaded.model)),
        "macs": macs,
        "macs_at": _input_desc(state, loaded),
    }
    if loaded is state.loaded and state.size_bytes is not None:
        out["bytes"] = int(state.size_bytes)  # quantized: real integer bytes + scales
    return out


def effective_weights(model) -> dict:
    """Every parameter, plus the logical weights of layers that store codes (the layers' own
    `effective_weights()`, read through `sparsa.models.hw_annotation.logical_weights`)."""
    return logical_weights(model)


def _input_desc(state: PipelineState, loaded) -> str:
    if getattr(loaded, "modality", "text") == "text":
        return f"batch 1, seq {state.recipe.evaluation.seq_len}"
    return "batch 1"


def quality(state: PipelineState, loaded=None) -> dict:
    """Fidelity vs the dense model (text encoders) or accuracy on held-out data (classifiers)."""
    from sparsa import metrics
    loaded = loaded or state.loaded
    data = state.eval_data()
    if data is None:
        return {}
    n = state.recipe.evaluation.max_samples
    if n is not None and len(data) > n:
        data = data.subset(n)
    with torch.no_grad():
        if data.kind == "text":
            fid = metrics.fidelity(loaded.model, state.reference.model, data.texts, loaded.tokenizer)
            out = {k: float(v) for k, v in fid.items() if isinstance(v, (int, float))}
            out["metric"] = "cosine_mean"
            out["value"] = out.get("cosine_mean")
        else:
            from sparsa.metrics import budget

            macs = state.dense_macs()
            show = budget.wants_progress(macs * len(data) * (budget.EMULATION_FACTOR if state.attention else 1))
            from sparsa.metrics.quality import NoClassifierHead, output_fidelity, top1_accuracy

            bs = budget.batch_size(macs)
            try:  # the LoadedModel: a size mismatch reads as bad input
                logits = metrics.predict_logits(loaded, data.x, bs,
                                                progress=f"accuracy on {len(data)} samples" if show else None)
            except NoClassifierHead:  # a backbone: its outputs against the dense model's, sample by sample
                fid = output_fidelity(loaded, state.reference, data.x, bs,
                                      progress=f"outputs on {len(data)} samples" if show else None)
                out = {k: v for k, v in fid.items() if isinstance(v, (int, float))}
                out.update(metric="cosine_mean", value=out["cosine_mean"])
            else:
                acc = top1_accuracy(logits, data)
                out = {"accuracy": acc, "metric": "accuracy", "value": acc}
    out["data"] = f"{data.name}:{data.split} ({len(data)} items)"
    return out


# ---------------------------------------------------------------- per-layer sparsity (heat map)

_LAYER_RE = re.compile(r"(?:^|\.)(?:layer|layers|blocks|block|stages|h)\.(\d+)(?:\.|$)")


def layer_sparsity(reference, compressed) -> dict:
    """Per-layer, per-weight sparsity vs the dense model: 1 − non-zeros(compressed) / numel(reference).

    Works for every kind of pruning (removed heads/neurons/channels shrink the tensor, unstructured
    pruning leaves zeros) without knowing how it was done. Rows: layers; columns: weight kinds.
    """
    ref = {n: p.numel() for n, p in effective_weights(reference.model).items() if n.endswith("weight") and p.dim() >= 2}
    comp = {n: int((p != 0).sum()) for n, p in effective_weights(compressed.model).items()}
    rows: dict[str, dict[str, float]] = {}
    for name, numel in ref.items():
        if "embed" in name:
            continue  # embeddings are never pruned by the stages; keep the map readable
        m = _LAYER_RE.search(name)
        # transformers: rows are layers, columns weight kinds; plain conv nets: one row per weight
        layer, kind = (f"layer {m.group(1)}", _kind(name, m)) if m else (name.removesuffix(".weight"), "weight")
        nz = comp.get(name)
        if nz is None:  # replaced module (e.g. a decomposed conv): sum what lives under its prefix
            prefix = name[: -len("weight")]  # its stored factors (PENNI basis + coefficients) count instead
            sub = [v for n, v in comp.items() if n.startswith(prefix) and not n.endswith("bias")]
            if not sub:
                continue
            nz = sum(sub)
        rows.setdefault(layer, {})[kind] = round(1.0 - nz / numel, 6)
    if any(l.startswith("layer ") for l in rows):  # a transformer: its layers; heads/poolers stay dense
        rows = {l: r for l, r in rows.items() if l.startswith("layer ")}
    kinds = sorted({k for r in rows.values() for k in r})
    order = list(dict.fromkeys(rows))
    layers = sorted(rows, key=lambda s: (0, int(s.split()[-1])) if s.startswith("layer ") else (1, order.index(s)))
    return {"layers": layers, "kinds": kinds, "values": [[rows[l].get(k) for k in kinds] for l in layers]}


def _kind(name: str, m) -> str:
    rest = name[m.end():] if m else name
    rest = rest.removesuffix(".weight").removesuffix("weight").strip(".")
    for a, b in (("attention.self.", ""), ("attention.attention.", ""), ("attention.output.dense", "attn_out"),
                 ("intermediate.dense", "ffn_in"), ("output.dense", "ffn_out")):
        rest = rest.replace(a, b)
    return rest or name


# ---------------------------------------------------------------- latency


def latency(state: PipelineState) -> dict:
    """Measured CPU latency: dense PyTorch, compressed PyTorch, and ONNX Runtime, same process."""
    spec = state.recipe.evaluation.latency
    if spec is None:
        return {}
    from sparsa import metrics
    from sparsa.metrics import budget
    inputs = example_inputs(state, batch=spec.batch)
    # runs/warmup the recipe leaves out scale with the model's cost (20/3 for small models, 3/1 for VideoMAE-B)
    runs = spec.runs if "runs" in spec.model_fields_set else budget.latency_runs(state.dense_macs() * spec.batch)
    warmup = spec.warmup if "warmup" in spec.model_fields_set else min(spec.warmup, budget.warmup_runs(runs))
    spec = spec.model_copy(update={"runs": runs, "warmup": warmup})
    out: dict[str, Any] = {"threads": spec.threads, "batch": spec.batch, "runs": runs, "warmup": warmup,
                           "input": _input_desc(state, state.loaded)}
    if spec.torch:
        for label, loaded in (("torch_dense", state.reference), ("torch", state.loaded)):
            ctx = attention_removed(state) if loaded is state.loaded else contextlib.nullcontext()
            with ctx, torch.no_grad():
                model = loaded.model
                out[label] = metrics.measure_latency(lambda: model(**inputs), warmup=spec.warmup, runs=spec.runs,
                                                     threads=spec.threads)
        notes = []
        if state.attention is not None:
            notes.append("CPU latency runs dense attention: dynamic attention pruning is costed by the "
                         "simulator (the Python integer reference is not a deployment kernel)")
        if _has_quantized_layers(state.loaded.model):
            notes.append("PyTorch runs the quantized layers as a float simulation (codes dequantized on every call), "
                         "so its 'torch' row is not a deployment figure; the integer model's latency is the ONNX "
                         "Runtime row")
        if notes:
            out["note"] = " ".join(notes)
    if spec.onnxruntime:
        out["onnxruntime"] = _ort_latency(state, inputs, spec)
    return out


def _has_quantized_layers(model) -> bool:
    from sparsa.quant.modules import QuantLinear

    return any(isinstance(m, QuantLinear) for m in model.modules())


def _ort_latency(state: PipelineState, inputs: dict, spec) -> dict:
    from sparsa.quant.onnx_model import OnnxModel

    path = state.onnx_path
    exported_here = False
    if path is None:
        path = _export_fp32(state, inputs)
        exported_here = True
    # spinning threads, as ORT's default, for one model timed back to back; the file's inputs as it declares them
    m = OnnxModel(path, threads=spec.threads, spinning=True)
    feed = m.feed(inputs)
    from sparsa import metrics
    res = dict(metrics.measure_latency(lambda: m.session.run(None, feed), warmup=spec.warmup, runs=spec.runs,
                                       threads=spec.threads))
    res["model"] = "fp32 export of the compressed model" if exported_here else "integer ONNX from the quantize stage"
    res["path"] = str(path) if state.out_dir else None
    return res


def _export_fp32(state: PipelineState, inputs: dict) -> Path:
    d = state.workdir()
    path = Path(d) / "model_fp32.onnx"
    names = list(inputs)
    from sparsa.quant import onnx_trace
    from sparsa.quant.export import PositionalWrapper

    wrapped = PositionalWrapper(state.loaded.model, names)
    import warnings

    with attention_removed(state), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript tracer's notes on HF's Python control flow
        # written under a temporary name and renamed, so a killed run never leaves a truncated model
        tmp = path.with_name(f".{path.name}.tmp")
        onnx_trace.export(wrapped, tuple(inputs[n] for n in names), str(tmp), input_names=names,
                          output_names=["output"])
        onnx_trace.finish_file(tmp)
        os.replace(tmp, path)
    return path

