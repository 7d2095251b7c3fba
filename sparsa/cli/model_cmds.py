"""`sparsa info`, `sparsa prune`, `sparsa eval`: inspect, shrink and measure a model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sparsa.cli import checks
from sparsa.cli.app import app, emit, status_console
from sparsa.cli.data_size import frames_option, image_size_option, set_data_size
from sparsa.errors import SparsaError, check_fraction
from sparsa.io import check_out_dir
from sparsa.prune.schedule_config import schedule_defaults

_SCHEDULE = schedule_defaults()  # the tolerance schedule's defaults live in its config
# the flags only the tolerance schedule reads (refused without --tolerance)
_SCHEDULE_FLAGS = ("granularity", "max_rounds", "budget_s", "round_recovery_epochs", "trial_recovery_steps",
                   "rollback")


def _input_desc(lm, inputs: dict) -> str:
    k, v = next(iter(inputs.items()))
    return f"{k} {list(v.shape)}"


def cost_summary(lm, seq_len: int | None = None, batch: int = 1) -> dict:
    """Params (all / without embedding tables), bytes and MACs at a stated input size."""
    from sparsa.metrics import count_macs, count_params, model_bytes

    inputs = lm.example_inputs(batch=batch, seq_len=seq_len)
    return {
        "params": count_params(lm.model),
        "params_encoder": count_params(lm.model, exclude_embeddings=True),
        "bytes": model_bytes(lm.model),
        "macs": count_macs(lm.model, inputs),
        "macs_input": _input_desc(lm, inputs),
    }


@app.command()
def info(
    model: str = typer.Argument(..., help="built-in name (minilm, tiny-vit, ...) or model folder"),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", callback=checks.positive, help="sequence length for MACs (text models; "
                                          "default 128, or the model's position limit if shorter)"),
    json_: bool = typer.Option(False, "--json", help="print one JSON object"),
):
    """Family, parameters, MACs at a stated input size, layers, heads per layer, FFN sizes."""
    from sparsa.models import load

    lm = load(model)
    result = {"model": model, **lm.describe(), **cost_summary(lm, seq_len)}
    result["source"] = lm.record.get("source")
    result["stages"] = [s.get("stage") for s in lm.record.get("stages", [])]
    from sparsa.quant.export import folder_onnx

    onnx = folder_onnx(model)
    if onnx is not None:
        result.update(_onnx_file_info(onnx))
    emit(result, json_, title=f"sparsa info {model}")


def _onnx_file_info(path: Path) -> dict:
    """What the folder's integer ONNX file is (`onnx_*` fields): size, what it stores as integers, the
    layers left float, the CPU it was exported for and what it needs; an unreadable file is said so."""
    from sparsa.quant.export import export_info

    out: dict = {"onnx_file": path.name, "onnx_file_bytes": path.stat().st_size}
    try:
        info = export_info(path)
    except Exception as e:  # protobuf's DecodeError and friends: the file is damaged, not the model
        return out | {"onnx_unreadable": f"{type(e).__name__}: {str(e)[:200]}"}
    return out | {"onnx_embeddings": info["embeddings"], "onnx_float_layers": info["float_layers"],
                  "onnx_weights": info["weights"], "onnx_exported_on": info["cpu"],
                  "onnx_cpu_needs": info["cpu_needs"] or "none (exact on any CPU)"}


@app.command()
def prune(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="built-in name or model folder"),
    out: str = typer.Option(..., "--out", help="the pruned model folder (+ result.json)"),
    heads: float = typer.Option(0.0, "--heads", callback=checks.fraction, help="fraction of attention heads to remove per layer, [0, 1)"),
    ffn: float = typer.Option(0.0, "--ffn", callback=checks.fraction, help="fraction of FFN neurons to remove per layer, [0, 1)"),
    channels: float = typer.Option(0.0, "--channels", callback=checks.fraction, help="fraction of conv/linear channels to remove, [0, 1)"),
    importance: str = typer.Option("l1", "--importance",
                                   help="l1 (= l1_group) | l1_mean_producer (seed 000) | l2 | taylor | activation | random"),
    scope: str = typer.Option("layer", "--scope", help="layer (uniform ratio) | global"),
    calib: Optional[str] = typer.Option(None, "--calib",
                                        help="calibration data for taylor/activation (default: corpus / digits / clips)"),
    calib_samples: int = typer.Option(64, "--calib-samples", callback=checks.in_range(1, 100_000),
                                      help="calibration samples the activation / taylor importance is measured on"),
    refit_samples: int = typer.Option(0, "--refit-samples", callback=checks.in_range(0, 100_000),
                                      help="after pruning, refit the attention-out / FFN-out projections by least "
                                           "squares to the dense model on this many calibration samples (0: off)"),
    seed: int = typer.Option(0, "--seed", callback=checks.seed, help="seed for random importance and calibration order"),
    tolerance: Optional[float] = typer.Option(None, "--tolerance", callback=checks.in_range(0, 1, lo_open=True, hi_open=True, hint='a quality loss as a fraction, e.g. 0.02'),
                                              help="prune as far as the quality loss stays within this (needs --data)"),
    data: Optional[str] = typer.Option(None, "--data", help="evaluation data for --tolerance"),
    granularity: str = typer.Option(_SCHEDULE["granularity"], "--granularity",
                                    help="--tolerance: structured (whole heads/neurons/channels) | unstructured "
                                         "(the seed's magnitude masks)"),
    max_rounds: int = typer.Option(_SCHEDULE["max_rounds"], "--max-rounds", callback=checks.in_range(1, 1000),
                                   help="--tolerance: rounds at most"),
    budget_s: Optional[float] = typer.Option(_SCHEDULE["budget_s"], "--budget-s",
                                             callback=checks.in_range(0, lo_open=True),
                                             help="--tolerance: wall-clock budget in seconds (the last accepted "
                                                  "state is kept)"),
    round_recovery_epochs: float = typer.Option(_SCHEDULE["round_recovery_epochs"], "--round-recovery-epochs",
                                                callback=checks.in_range(0, 100),
                                                help="--tolerance: fine-tuning epochs after each round"),
    trial_recovery_steps: int = typer.Option(_SCHEDULE["trial_recovery_steps"], "--trial-recovery-steps",
                                             callback=checks.in_range(0, 100_000),
                                             help="--tolerance: fine-tuning steps after each trial, before its check"),
    rollback: bool = typer.Option(_SCHEDULE["rollback"], "--rollback/--no-rollback",
                                  help="--tolerance: undo a step beyond tolerance (--no-rollback keeps the first "
                                       "state beyond it, as the seed's table does)"),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", callback=checks.positive,
                                          help="sequence length MACs are counted at (text models; default 128, or the "
                                               "model's position limit if shorter)"),
    image_size: Optional[int] = image_size_option(),
    frames: Optional[int] = frames_option(),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out folder (else refused)"),
    json_: bool = typer.Option(False, "--json", help="print one JSON object"),
):
    """Remove heads, FFN neurons and channels; the saved model is smaller and reloads on its own."""
    from sparsa.models import load
    from sparsa.prune import PrunePlan
    from sparsa.prune.oneshot import needs_calibration, prune_oneshot

    # typer vendors its own click, so its ParameterSource is compared by name
    schedule_only = [p for p in _SCHEDULE_FLAGS if getattr(ctx.get_parameter_source(p), "name", "DEFAULT") != "DEFAULT"]
    if tolerance is None and schedule_only:
        raise SparsaError(f"--{schedule_only[0].replace('_', '-')} sets the tolerance schedule",
                          hint="add --tolerance (a quality loss as a fraction, e.g. 0.02) and --data, or drop it")
    checks.out_apart_from_model(out, model)
    if tolerance is not None:
        if seq_len is not None:
            raise SparsaError("--seq-len sets the text length the one-shot mode counts MACs at; the tolerance "
                              "mode measures on --data", hint="drop --seq-len, or --tolerance")
        if data is None:
            raise SparsaError("--tolerance needs --data (the set the quality loss is measured on)",
                              hint="e.g. --tolerance 0.02 --data digits")
        from sparsa.prune.schedule import tolerance_prune

        lm = load(model)
        checks.require_float_layers(lm, model, "sparsa prune", _PRUNE_ORDER_HINT)

        # the tolerance-driven mode: kinds with a non-zero --heads/--ffn/--channels are pruned
        # (all the model has when none is given); the fractions themselves are the one-shot mode's
        kinds = tuple(k for k, v in (("heads", heads), ("ffn", ffn), ("channels", channels)) if v > 0) or None
        set_data_size(lm, image_size, frames)
        result = tolerance_prune(lm, tolerance=tolerance, data=data, out=out, importance=importance,
                                 scope=scope, seed=seed, kinds=kinds, granularity=granularity,
                                 max_rounds=max_rounds, budget_s=budget_s,
                                 round_recovery_epochs=round_recovery_epochs,
                                 trial_recovery_steps=trial_recovery_steps, rollback=rollback,
                                 console=status_console(json_), overwrite=overwrite)
        emit(result if isinstance(result, dict) else {"out": out, "result": str(result)}, json_)
        return
    plan = PrunePlan(heads=heads, ffn=ffn, channels=channels, importance=importance, scope=scope, seed=seed)
    check_out_dir(out, overwrite=overwrite)  # before any work
    log = status_console(json_)
    lm = load(model)
    checks.require_float_layers(lm, model, "sparsa prune", _PRUNE_ORDER_HINT)
    set_data_size(lm, image_size, frames)
    calib_data = None
    if needs_calibration(plan) or refit_samples:
        from sparsa.data import load_dataset
        from sparsa.prune.calib import default_calibration

        log.print(f"loading calibration data ({calib or 'built-in'}) ...")
        calib_data = load_dataset(calib, split="calib", seed=seed, model=lm) if calib else default_calibration(lm)
    before = cost_summary(lm, seq_len)
    small, refit = prune_oneshot(lm, plan, calib_data, calib_samples=calib_samples, refit_samples=refit_samples,
                                 progress=lambda m: log.print(m, highlight=False))
    after = cost_summary(small, seq_len)
    d = small.describe()
    result = {
        "out": str(out), "family": lm.family, "plan": plan.to_dict(),
        "params_before": before["params"], "params_after": after["params"],
        "params_encoder_before": before["params_encoder"], "params_encoder_after": after["params_encoder"],
        "macs_before": before["macs"], "macs_after": after["macs"], "macs_input": after["macs_input"],
        "macs_ratio": after["macs"] / max(before["macs"], 1),
        "heads_per_layer": d["heads_per_layer"], "ffn_per_layer": d["ffn_per_layer"],
    }
    if "channel_groups" in d:
        result["channel_groups"] = d["channel_groups"]
    if refit is not None:
        result["refit"] = refit
    small.save(out, overwrite=overwrite, result={k: v for k, v in result.items() if k != "out"})
    emit(result, json_, title=f"pruned {model} -> {out}")


_PRUNE_ORDER_HINT = ("prune the float model it came from, then quantize / decompose the pruned folder "
                     "(a PENNI model merged with --merge holds plain convolutions and can be pruned)")


@app.command("eval")
def eval_cmd(
    model: str = typer.Argument(..., help="built-in name or model folder"),
    reference: Optional[str] = typer.Option(None, "--reference",
                                            help="dense model to compare with (default: the recorded original)"),
    data: Optional[str] = typer.Option(None, "--data",
                                       help="text file / data set name (default: built-in sentences, digits or clips)"),
    attention: Optional[str] = typer.Option(None, "--attention", help="dynamic attention pruning method (e.g. hdp)"),
    rho_b: Optional[float] = typer.Option(None, "--rho-b", callback=checks.in_range(-1, 1), help="HDP block-pruning ratio"),
    tau_h: Optional[float] = typer.Option(None, "--tau-h", callback=checks.non_negative, help="HDP head-pruning threshold"),
    head_ratio: Optional[float] = typer.Option(None, "--head-ratio", callback=checks.fraction,
                                               help="HDP: calibrate --tau-h so this share of heads is pruned "
                                                    "(on the calibration split, never the evaluation data)"),
    sparsity: Optional[float] = typer.Option(None, "--sparsity", callback=checks.fraction, help="target attention sparsity (baselines)"),
    block: Optional[int] = typer.Option(None, "--block", callback=checks.in_range(1, 64), help="attention block size"),
    gap: Optional[float] = typer.Option(None, "--gap", callback=checks.in_range(0, 64), help="hdp (gap rule): row gap below the row maximum"),
    ratio: Optional[float] = typer.Option(None, "--ratio", callback=checks.fraction, help="topk / spatten: fraction pruned"),
    importance: Optional[str] = typer.Option(None, "--importance", help="HDP block importance: abs | signed | max | rowmax"),
    runs: Optional[int] = typer.Option(None, "--runs", callback=checks.in_range(1, 10_000),
                                       help="timed runs for latency (median reported); default 20, fewer for "
                                            "large models (3 to 20: 2e11 MACs' worth)"),
    threads: int = typer.Option(2, "--threads", callback=checks.in_range(1, 256), help="CPU threads for latency"),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", callback=checks.positive, help="sequence length for latency (text models; "
                                          "default 128, or the model's position limit if shorter)"),
    samples: Optional[int] = typer.Option(None, "--samples", callback=checks.in_range(1, 1_000_000),
                                          help="images/clips evaluated (classifiers); default: the whole test split "
                                               "for small models, 2e12 MACs' worth (at least 4) for large ones"),
    image_size: Optional[int] = image_size_option(),
    frames: Optional[int] = frames_option(),
    json_: bool = typer.Option(False, "--json", help="print one JSON object"),
):
    """Fidelity (text) or accuracy (classifiers) against a reference, and measured latency."""
    from sparsa.models import load

    if head_ratio is not None:
        if attention not in ("hdp", "hdp-seed"):
            raise SparsaError("--head-ratio calibrates HDP's head threshold τ_H",
                              hint="use it with --attention hdp or --attention hdp-seed")
        if tau_h is not None:
            raise SparsaError("give either --tau-h (an absolute threshold) or --head-ratio (a share of heads), not both")
        check_fraction("--head-ratio", head_ratio)
    given = {k: v for k, v in dict(gap=gap, ratio=ratio, importance=importance).items() if v is not None}
    if attention is None and given:
        raise SparsaError(f"--{next(iter(given))} is an option of a dynamic attention method",
                          hint="add --attention hdp (or another method), or drop it")
    if attention is not None and seq_len is not None:  # it sizes the latency run, which --attention does not do:
        # ignored, a user would read the sparsity as measured at that length (even one past the model's limit)
        raise SparsaError(f"--seq-len {seq_len} sizes the latency measurement, and `sparsa eval --attention` measures "
                          "quality only, each text at its own length",
                          hint="drop --seq-len; to cost dynamic attention at a length use "
                               "`sparsa sim MODEL --attention METHOD --seq-len N`")
    if attention is not None:
        from sparsa.recipe import AttentionStage

        # the same typed options as a recipe's attention stage (names, ranges, method names)
        options = AttentionStage.from_cli_options(attention, given, flags=True).options()
    lm = load(model)
    set_data_size(lm, image_size, frames)
    if attention is not None:
        from sparsa.attention.evaluate import evaluate_attention

        calibrated = {}
        if head_ratio is not None:
            from sparsa.attention.calibrate import calibrate_tau_h

            cfg = {k: v for k, v in dict(rho_b=rho_b, block=block).items() if v is not None}
            tau_h = calibrate_tau_h(lm, None, head_ratio, method=attention, **cfg)
            calibrated = {"head_ratio": head_ratio, "tau_h_calibrated": tau_h}
        ref = load(reference) if reference else None
        if ref is not None:
            check_reference(lm, model, ref, reference)
        warn_nonfinite_weights(lm, model)
        result = evaluate_attention(lm, attention, rho_b=rho_b, tau_h=tau_h, sparsity=sparsity, block=block,
                                    data=data, reference=ref, samples=samples, **options)
        emit({"model": model, "attention": attention, **calibrated, **result}, json_, title=f"sparsa eval {model} --attention {attention}")
        return
    from sparsa.quant.export import folder_onnx

    result = evaluate(lm, reference=reference, data=data, runs=runs, threads=threads, seq_len=seq_len,
                      samples=samples, log=status_console(json_), onnx=folder_onnx(model))
    emit({"model": model, **result}, json_, title=f"sparsa eval {model}")


def evaluate(lm, reference: str | None = None, data: str | None = None, runs: int | None = None, threads: int = 2,
             seq_len: int | None = None, samples: int | None = None, log=None, onnx: Path | None = None) -> dict:
    """Quality vs a reference plus latency of both (same process), as `sparsa eval` reports it.

    Classifiers are evaluated on `samples` test images/clips and latency timed over `runs`; by
    default both scale with the model's MACs (`sparsa.metrics.budget`). onnx: the folder's exported
    file (`model_int8.onnx`), measured the same way in ONNX Runtime (`onnxruntime_*` fields)."""
    from sparsa.metrics import count_macs, fidelity, measure_latency, measure_latency_pair
    from sparsa.metrics import budget
    from sparsa.metrics.quality import NoClassifierHead, agreement, output_fidelity, predict_logits, top1_accuracy
    from sparsa.models import load

    ref_name = reference or lm.record.get("source")
    result: dict = {"family": lm.family}
    ref = None
    if ref_name:
        try:
            ref = load(ref_name)
        except SparsaError as e:
            if reference:
                raise
            if log:
                log.print(f"recorded original {ref_name!r} is not available ({e.message}); no reference")
    if ref is not None:
        ref.data_size = dict(lm.data_size)  # the reference sees the same data, so its MACs and latency too
        check_reference(lm, "the model", ref, ref_name)
    bad = warn_nonfinite_weights(lm, "the model") + (warn_nonfinite_weights(ref, ref_name) if ref is not None else [])
    if bad:
        result["nonfinite_weights"] = bad
    if lm.modality == "text" and ref is None:
        raise SparsaError("a text model is evaluated against a reference model, and none is known",
                          hint="give --reference (e.g. --reference minilm)")
    # one flop-counted pass per model (a full forward: seconds on VideoMAE-B), shared by the evaluation
    # budget below and the MACs reported beside the latency
    inputs = lm.example_inputs(batch=1, seq_len=seq_len)
    lm_macs = count_macs(lm.model, inputs)
    rinputs = ref.example_inputs(batch=1, seq_len=seq_len) if ref is not None else None
    ref_macs = count_macs(ref.model, rinputs) if ref is not None else None
    if lm.modality == "text":
        if data:
            from sparsa.data import load_dataset

            ds = load_dataset(data, split="test")
            if ds.kind != "text":
                raise SparsaError(f"--data {data!r} is {ds.kind} data, but the model is a text model",
                                  hint="give a text file (one sentence per line) or the built-in `sentences`")
            texts = ds.texts
        else:
            from sparsa.data.text import EVAL_SENTENCES

            texts = EVAL_SENTENCES
        result["reference"] = ref_name
        result["data"] = data or "sentences"
        result.update(fidelity(lm, ref, texts, lm.tokenizer))

        def quality(m, what="the model"):  # (the ONNX file's too, below)
            return fidelity(m, ref, texts, lm.tokenizer)
    else:
        from sparsa.data import load_dataset

        name = data or {"image": "digits", "video": "clips"}[lm.modality]
        # sized by the reference's cost when there is one: every variant of a model gets the same samples
        macs = max(1, ref_macs if ref is not None else lm_macs)
        n = samples or budget.eval_samples(macs)
        ds = load_dataset(name, split="test", model=lm, limit=n)
        if ds.kind == "text":
            raise SparsaError(f"--data {name!r} is text, but the model classifies {lm.modality} inputs",
                              hint="give labelled images (a class_name/*.png folder, digits) or clips")
        result["data"] = name
        result["data_shape"] = list(ds.x.shape[1:])  # the model's input size (or --image-size / --frames)
        result["n_samples"] = len(ds)
        if ds.info.get("resized_from"):  # a folder's images of other sizes, resized
            result["data_resized_from"] = ds.info["resized_from"]
        bs = budget.batch_size(macs)
        show = budget.wants_progress(macs * len(ds))
        ref_logits: list = []  # computed once, for the model and its ONNX file

        def quality(m, what="the model"):
            out: dict = {}
            try:
                logits = predict_logits(m, ds.x, bs, progress=f"evaluating {what}" if show else None)
            except NoClassifierHead as e:  # a backbone: its outputs against the reference's, sample by sample
                if ref is None:
                    raise SparsaError(e.message + "; and no reference is known to compare its outputs with",
                                      hint="give --reference (the model it was made from)") from None
                return output_fidelity(m, ref, ds.x, bs, progress=f"comparing {what}'s outputs" if show else None)
            out["accuracy"] = top1_accuracy(logits, ds)
            if ref is not None:  # each model runs once over the data: accuracy and agreement share the logits
                if not ref_logits:
                    ref_logits.append(predict_logits(ref, ds.x, bs, progress="evaluating the reference" if show else None))
                out["reference_accuracy"] = top1_accuracy(ref_logits[0], ds)
                out.update(agreement(logits, ref_logits[0]))
            return out

        result.update(quality(lm))
        if ref is not None:
            result["reference"] = ref_name
    result["macs"] = lm_macs
    auto_runs = runs is None
    runs = budget.latency_runs(result["macs"]) if auto_runs else runs
    warmup = budget.warmup_runs(runs) if auto_runs else min(3, runs)
    if log and result["macs"] * runs > budget.PROGRESS_MACS:
        log.print(f"timing latency: {runs} runs after {warmup} warm-up" + (" of each model, alternating" if ref else ""))
    if ref is None:
        lat = measure_latency(lambda: lm.model(**inputs), warmup=warmup, runs=runs, threads=threads)
    else:
        # interleaved, so a busy neighbour slows both sides alike
        lat, rl = measure_latency_pair(lambda: lm.model(**inputs), lambda: ref.model(**rinputs),
                                       warmup=warmup, runs=runs, threads=threads)
        result["reference_macs"] = ref_macs
        result["reference_latency_ms"] = rl["median_ms"]
        result["latency_ratio"] = lat["paired_ratio_median"]  # median of back-to-back pair ratios
        result["macs_ratio"] = result["macs"] / max(result["reference_macs"], 1)
    result.update({"latency_ms": lat["median_ms"], "latency_p10_ms": lat["p10_ms"], "latency_p90_ms": lat["p90_ms"],
                   "latency_threads": threads, "latency_runs": runs, "latency_input": _input_desc(lm, inputs)})
    if onnx is not None:
        result.update(_evaluate_onnx(onnx, lm, ref, inputs, rinputs, quality, threads, runs, warmup, log))
    return result


def _evaluate_onnx(path: Path, lm, ref, inputs, rinputs, quality, threads, runs, warmup, log) -> dict:
    """The folder's ONNX file through the same quality measure and latency timing as the model, as
    `onnxruntime_*` fields. A file this CPU cannot run exactly (VNNI) is reported as skipped, with why."""
    from sparsa.metrics import measure_latency, measure_latency_pair
    from sparsa.quant.onnx_model import OnnxModel

    out: dict = {"onnxruntime_file": str(path)}
    try:
        m = OnnxModel(path, lm.adapter, threads=threads, spinning=True)
    except SparsaError as e:
        if log:
            log.print(f"ONNX file not measured: {e.message}")
        return out | {"onnxruntime_skipped": e.message}
    if log:
        log.print(f"measuring {path.name} in ONNX Runtime")
    try:
        q = quality(m, "the ONNX file")
        m(**inputs)  # the latency input too (a text length the file may not take)
    except SparsaError as e:  # inputs the file was not exported for: the model's own figures stand
        if log:
            log.print(f"ONNX file not measured: {e.message}")
        return out | {"onnxruntime_skipped": e.message}
    out.update({f"onnxruntime_{k}": v for k, v in q.items() if k not in ("reference_accuracy", "n_texts", "n_samples")})
    feed = m.feed(inputs)

    def run():
        m.session.run(None, feed)

    if ref is None:
        lat = measure_latency(run, warmup=warmup, runs=runs, threads=threads)
    else:
        lat, _ = measure_latency_pair(run, lambda: ref.model(**rinputs), warmup=warmup, runs=runs, threads=threads)
        out["onnxruntime_latency_ratio"] = lat["paired_ratio_median"]  # vs the reference in PyTorch, as latency_ratio
    out.update({"onnxruntime_latency_ms": lat["median_ms"], "onnxruntime_latency_p10_ms": lat["p10_ms"],
                "onnxruntime_latency_p90_ms": lat["p90_ms"]})
    return out


def check_reference(lm, name: str, ref, ref_name: str) -> None:
    """A reference is only comparable when it reads the same kind of input the model does."""
    if ref.modality != lm.modality:
        raise SparsaError(f"reference {ref_name!r} ({ref.family}) takes {ref.modality} input, but {name} "
                          f"({lm.family}) takes {lm.modality} input: they cannot be compared",
                          hint=f"give a reference that takes {lm.modality} input, e.g. the dense model this one "
                               "was made from")
    if lm.modality == "text":
        return
    mine = {k: list(v.shape) for k, v in lm.example_inputs(batch=1).items()}
    theirs = {k: list(v.shape) for k, v in ref.example_inputs(batch=1).items()}
    if mine != theirs:
        raise SparsaError(f"reference {ref_name!r} takes input {theirs}, but {name} takes {mine}",
                          hint="give a reference with the same input size (image size, frames, channels)")


def warn_nonfinite_weights(lm, name: str) -> list[str]:
    """Names of parameters holding NaN or infinity (a broken file or a diverged run), with a warning on stderr."""
    import torch

    from sparsa.cli.app import err_console

    with torch.no_grad():
        bad = [n for n, p in lm.model.named_parameters() if p.is_floating_point() and not bool(torch.isfinite(p).all())]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        err_console.print(f"[yellow]warning:[/] {name} has NaN or infinite weights in {shown}; its metrics are not "
                          "meaningful", markup=True)
    return [f"{name}: {n}" for n in bad]
