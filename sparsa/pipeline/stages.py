"""One function per stage type: (stage options, pipeline state) -> record (plain data).

Each runner changes `state.loaded` (the model being compressed) through the public API of its
stage's package and returns what it did as JSON-able data. No runner reaches into another stage.
"""

from __future__ import annotations

from typing import Any, Callable

from sparsa.pipeline.state import PipelineState
from sparsa.recipe import AttentionStage, DecomposeStage, PruneStage, QuantizeStage, TolerancePruneStage


def _plain(obj: Any) -> Any:
    """Records as JSON-able data (dataclasses, pydantic, tensors reduced to lists/scalars)."""
    import json

    from sparsa.io import _json_default

    try:
        return json.loads(json.dumps(obj, default=_json_default))
    except (TypeError, ValueError):
        return repr(obj)


def run_prune(st: PruneStage, state: PipelineState) -> dict:
    from sparsa import prune
    from sparsa.prune.oneshot import needs_calibration, prune_oneshot
    plan = prune.PrunePlan(heads=st.heads, ffn=st.ffn, channels=st.channels, importance=st.importance,
                           scope=st.scope, seed=state.recipe.seed)
    calib = state.calib_data(st.calib) if needs_calibration(plan) or st.refit_samples else None
    state.loaded, refit = prune_oneshot(state.loaded, plan, calib, calib_samples=st.calib_samples,
                                        refit_samples=st.refit_samples, progress=state.note)
    rec = dict(state.loaded.record.get("stages", [{}])[-1])
    rec.pop("kept", None)  # kept indices per group: in the saved model's record, too long for a report
    if refit is not None:
        rec["refit"] = refit
    return _plain(rec)


def run_tolerance_prune(st: TolerancePruneStage, state: PipelineState) -> dict:
    from sparsa.prune import schedule

    name = st.data or state.recipe.recipe.data.train or state.default_data()
    work = state.workdir() / "tolerance_prune"
    # the stage's fields are ScheduleConfig's options by name
    opts = st.model_dump(exclude={"type", "name", "data", "tolerance"})
    opts["kinds"] = None if st.kinds is None else tuple(st.kinds)
    cfg = schedule.ScheduleConfig.from_opts(st.tolerance, **opts)
    # the pipeline's data (loaded once, with the recipe's data seed), one split per role
    roles = {"check": cfg.check_split, "report": cfg.report_split, "train": "train"}
    data = {role: state.dataset(name, split) for role, split in roles.items()} if name else None
    result, state.loaded = schedule.tolerance_prune(state.loaded, st.tolerance, data, work, progress=False,
                                                    return_model=True, **opts)
    return _plain(result)


def run_quantize(st: QuantizeStage, state: PipelineState) -> dict:
    from sparsa import quant
    from sparsa.quant import quantize_loaded as fn
    needs = (st.activations not in (False, "none") or st.clip == "search" or st.smooth is not None
             or st.objective == "output")
    calib = state.calib_data(st.calib) if needs and st.mode == "standard" else None
    if calib is not None and len(calib) > st.calib_samples and st.smooth_budget is None:  # trimming scores on more
        calib = calib.subset(st.calib_samples)
    if st.mode == "hybrid":
        # ESCALATE: 8-bit basis kernels, ternary coefficients, on the decompose stage's PENNI layers;
        # the same verb (and defaults) as `sparsa decompose --hybrid-quant`
        from sparsa.decompose import escalate
        train = state.train_data() if st.hybrid_epochs > 0 else None
        q = escalate.quantize_hybrid(state.loaded.model, train, epochs=st.hybrid_epochs, seed=state.recipe.seed)
        record = {"mode": "hybrid", "hybrid_epochs": st.hybrid_epochs, "finetune": _plain(q["finetune"]),
                  "layers": _plain(q["layers"]), "storage": _plain(q["storage"])}
        if isinstance(record["storage"], dict) and record["storage"].get("total") is not None:
            state.size_bytes = int(record["storage"]["total"])
        state.quant = record
        return record
    from sparsa.pipeline.measure import attention_removed

    # weights are quantized on the structural model: the dynamic attention method stays installed
    # for evaluation and simulation, but neither calibrates nor exports through its integer emulation
    with attention_removed(state):
        out = fn(state.loaded, mode=st.mode, bits=st.bits, scheme=st.scheme, clip=st.clip,
                 per_channel=st.per_channel, activations=st.activations, calib=calib, calib_samples=st.calib_samples,
                 smooth=st.smooth, smooth_ffn_out=st.smooth_ffn_out, smooth_budget=st.smooth_budget,
                 float_storage=st.float_storage, objective=st.objective, keep_float=st.keep_float)
    state.loaded, record = _split_result(out, state.loaded)
    record = _plain(record)
    record = record if isinstance(record, dict) else {"record": record}
    size = getattr(quant, "quant_size", None)
    if size is not None and st.mode == "standard":
        record["size"] = _plain(size(state.loaded.model))
        state.size_bytes = int(record["size"]["bytes"])  # real integer bytes + scales + what stays float
    elif record.get("bytes") is not None:
        state.size_bytes = int(record["bytes"])
    state.quant = record
    if st.onnx:
        from sparsa.quant.export import ONNX_FILE, export_onnx as export
        from pathlib import Path

        d = state.workdir()
        # explicit: ORT's BERT fusion needs the same head count in every layer
        kw = {"fuse": bool(st.onnx_fuse), "skip_layernorm": st.split_layernorm is False, "embeddings": st.embeddings,
              "fast_gelu": st.fast_gelu}
        import warnings

        if state.note:
            state.note("weights quantized; exporting the integer ONNX model")
        with attention_removed(state), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript tracer's notes on HF's Python control flow
            state.onnx_path = Path(export(state.loaded, Path(d) / ONNX_FILE,
                                          seq_len=state.recipe.evaluation.seq_len, **kw))
        record["onnx"] = str(state.onnx_path) if state.out_dir else "(temporary file)"
        # the deployed file's size: integer weights and embedding tables (the folder keeps the tables float)
        record["onnx_bytes"] = state.onnx_path.stat().st_size
    return record


def run_attention(st: AttentionStage, state: PipelineState) -> dict:
    from sparsa.attention import install
    options = st.options()
    record: dict[str, Any] = {"method": st.method}
    if st.sparsity is not None:
        from sparsa.attention.evaluate import calibrate
        options = dict(calibrate(state.loaded, st.method, st.sparsity, _forward_on_calib(state), **options))
        record["target_sparsity"] = st.sparsity
    install(state.loaded.model, st.method, **options)
    state.attention = {"method": st.method, "options": options}
    record["options"] = _plain(options)
    return record


def _forward_on_calib(state: PipelineState, n: int = 32):
    """A callable running the model on calibration data (what the sparsity calibration measures)."""
    import torch

    loaded, calib = state.loaded, state.calib_data()
    if calib.kind == "text":
        enc = loaded.tokenizer(calib.texts[:n], padding=True, truncation=True, max_length=state.recipe.evaluation.seq_len,
                               return_tensors="pt")
        inputs = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    else:
        inputs = {next(iter(loaded.example_inputs(batch=1))): calib.x[:n].float()}

    def run():
        with torch.no_grad():
            loaded.model(**inputs)

    return run


def run_decompose(st: DecomposeStage, state: PipelineState) -> dict:
    from sparsa.decompose import flow

    # the pipeline's data loader (loaded once, the recipe's data seed); the CLI's --seed is both seeds
    data = st.data or state.recipe.recipe.data.train
    sets = flow.load_splits(state.loaded, data, loader=state.dataset)
    state.loaded, res = flow.run_penni(state.loaded, st.penni_config(state.recipe.seed), sets)
    return _plain(res)


def _split_result(out, loaded):
    """Stage APIs return (loaded, record) or just a record (in-place change)."""
    if isinstance(out, tuple) and len(out) == 2:
        return out
    return loaded, out


RUNNERS: dict[str, Callable[[Any, PipelineState], dict]] = {
    "prune": run_prune,
    "tolerance-prune": run_tolerance_prune,
    "quantize": run_quantize,
    "attention": run_attention,
    "decompose": run_decompose,
}
