"""`sparsa quantize`: integer weights (and activations) with searched clipping, saved and optionally exported to ONNX."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sparsa.cli import checks
from sparsa.cli.app import app, emit, status_console
from sparsa.cli.data_size import frames_option, image_size_option, set_data_size
from sparsa.errors import SparsaError
from sparsa.cli.checks import QUANTIZED_KINDS, require_float_layers
from sparsa.io import atomic_write_json, check_out_dir, staged_folder


@app.command()
def quantize(
    model: str = typer.Argument(..., help="model name (minilm, tiny-swin, ...) or folder"),
    bits: str = typer.Option("8", "--bits", help="weight bits 2..8, 'ternary', or 'auto' (8 on a VNNI CPU, else 7)"),
    scheme: str = typer.Option("sym", "--scheme", help="sym (no zero point) | asym (zero point)"),
    clip: str = typer.Option("search", "--clip", help="max | percentile | search"),
    per_channel: bool = typer.Option(True, "--per-channel/--per-tensor", help="one weight scale per output channel"),
    activations: str = typer.Option("none", "--activations",
                                    help="none (weight-only) | dynamic (run-time range) | static (calibrated)"),
    objective: str = typer.Option("weight", "--objective", help="search minimises the weight error or the layer 'output' error"),
    calib: Optional[str] = typer.Option(None, "--calib", help="calibration data: corpus, digits, clips, or a path"),
    image_size: Optional[int] = image_size_option(),
    frames: Optional[int] = frames_option(),
    calib_samples: int = typer.Option(32, "--calib-samples", callback=checks.in_range(1, 100_000), help="calibration samples used"),
    keep_float: Optional[list[str]] = typer.Option(None, "--keep-float", help="module-name pattern kept in float (repeatable)"),
    smooth: Optional[float] = typer.Option(None, "--smooth", callback=checks.in_range(0, 1), help="SmoothQuant strength α in [0, 1] for the layers' inputs "
                                           "(BERT-family: Q/K/V share one scale, attention-out folds into V)"),
    smooth_ffn_out: Optional[float] = typer.Option(None, "--smooth-ffn-out", callback=checks.in_range(0, 1), help="α for the FFN output projections "
                                                   "(behind GELU; default: not smoothed; 0.7 measured best on MiniLM; "
                                                   "without --smooth only these layers are smoothed)"),
    smooth_budget: Optional[float] = typer.Option(None, "--smooth-budget", callback=checks.fraction, help="keep only the run-time smoothing Muls "
                                                  "that pay: drop the cheapest while the calibration cosine stays within "
                                                  "this of the fully smoothed model (text models; e.g. 0.001)"),
    float_storage: str = typer.Option("float32", "--float-storage", help="how the tensors that stay float (biases, "
                                      "norms, embeddings, scales) are stored: float32 | float16 (rounded in place)"),
    split_layernorm: Optional[bool] = typer.Option(None, "--split-layernorm/--fused-layernorm", help="ONNX: each "
                                                   "residual sum before a LayerNormalization as its own op (default), or "
                                                   "left to ORT's fused SkipLayerNormalization (~3x slower on the CPUs measured)"),
    fast_gelu: bool = typer.Option(False, "--fast-gelu", help="ONNX (BERT family, fused export): ORT's "
                                   "tanh-approximated FastGelu instead of the exact erf GELU (faster)"),
    embeddings: str = typer.Option("int8", "--embeddings", help="ONNX: how the embedding tables are stored: int8 (per-row "
                                   "scales, gathered and dequantized in the graph) | int4 (packed, two per byte) | float"),
    out: Path = typer.Option(..., "--out", help="the quantized model folder (loads like any model; + result.json "
                             "[+ model_int8.onnx])"),
    onnx: bool = typer.Option(False, "--onnx", help="also export an integer ONNX model"),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", callback=checks.positive, help="example sequence length for export (text models; "
                                          "default 128, or the model's position limit if shorter)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out folder (else refused)"),
    json_: bool = typer.Option(False, "--json", help="print one JSON object"),
):
    """Quantize MODEL's Linear layers to integers; save them (and an ONNX model on integer kernels)."""
    from sparsa.models import load
    from sparsa.models.store import RESULT_FILE, write_model_files
    from sparsa.quant import quantize_loaded

    bits_v: int | str = bits if bits in ("ternary", "auto") else _int(bits)
    from sparsa.quant.embeddings import check_storage

    check_storage(embeddings)
    if float_storage not in ("float32", "float16"):
        raise SparsaError(f"--float-storage {float_storage!r} is not a storage type", hint="use float32 or float16")
    if smooth_budget is not None and not 0.0 <= smooth_budget < 1.0:
        raise SparsaError(f"--smooth-budget {smooth_budget} must be a cosine drop in [0, 1)", hint="e.g. 0.001")
    checks.out_apart_from_model(out, model)
    check_out_dir(out, overwrite=overwrite)  # before any work
    for pattern in keep_float or []:
        _check_glob(pattern)
    console = status_console(json_)
    lm = load(model)
    require_float_layers(lm, model, "sparsa quantize", "quantize the float model it came from (to prune too: "
                         "prune first, then quantize)", refused=QUANTIZED_KINDS)
    set_data_size(lm, image_size, frames)
    _check_keep_float_matches(lm, keep_float or [])
    if (fast_gelu or split_layernorm is not None) and not onnx:
        raise SparsaError("--fast-gelu / --split-layernorm / --fused-layernorm lay out the ONNX export, and none was asked for",
                          hint="add --onnx, or drop them")
    needs_calib = (activations == "static" or smooth is not None or smooth_ffn_out is not None
                   or (clip == "search" and objective == "output"))
    if needs_calib and calib is None:
        calib = "corpus" if lm.modality == "text" else None
        if calib is None:
            raise SparsaError("static activations / output-error search need calibration data",
                              hint="pass --calib digits (or clips, or a folder)")
    calib_data = None
    if calib is not None:
        from sparsa.data import load_dataset

        calib_data = load_dataset(calib, split="calib", model=lm)
    console.print(f"[bold]sparsa quantize[/] {model}: {bits}-bit {scheme} {clip} "
                  f"{'per-channel' if per_channel else 'per-tensor'}, activations {activations}")
    # the same verb as the recipe's quantize stage
    _, rec = quantize_loaded(lm, bits=bits_v, scheme=scheme, clip=clip, per_channel=per_channel,
                             activations=activations, calib=calib_data, calib_samples=calib_samples, smooth=smooth,
                             smooth_ffn_out=smooth_ffn_out, smooth_budget=smooth_budget, float_storage=float_storage,
                             objective=objective, keep_float=keep_float or [], seq_len=seq_len,
                             progress=console.print)
    result = {"model": model, "out": str(out), "bits": rec.get("bits_choice", {}).get("bits", bits_v), "scheme": scheme,
              "clip": clip,
              "per_channel": per_channel, "activations": activations, "smooth": smooth, "smooth_ffn_out": smooth_ffn_out,
              "float_storage": float_storage,
              "layers": rec["layers"],
              "bytes": rec["bytes"], "fp32_bytes": rec["fp32_bytes"], "size_ratio": rec["ratio"],
              "int_weight_bytes": rec["int_weight_bytes"], "scale_bytes": rec["scale_bytes"],
              "zero_point_bytes": rec["zero_point_bytes"], "float_bytes": rec["float_bytes"]}
    if "smooth_trim" in rec:
        result["smooth_trim"] = rec["smooth_trim"]
    with staged_folder(out, overwrite=overwrite) as work:  # the model, its ONNX export and result.json appear together
        write_model_files(lm, work)
        if onnx:
            from sparsa.quant.export import ONNX_FILE, export_info, export_onnx, integer_initializer_bytes, zero_points_in

            path = work / ONNX_FILE
            export_onnx(lm, path, seq_len=seq_len, embeddings=embeddings, fast_gelu=fast_gelu,
                        skip_layernorm=split_layernorm is False)
            info = export_info(path)
            result["onnx"] = str(Path(out) / ONNX_FILE)
            result["onnx_bytes"] = integer_initializer_bytes(path)
            result["onnx_zero_points"] = len(zero_points_in(path))
            result["embeddings"], result["embedding_tables"] = info["embeddings"], info["embedding_tables"]
            result["float_layers"] = info["float_layers"]  # layers the integer path did not take: never silent
            result["cpu"], result["cpu_isa"] = info["cpu"], info["cpu_isa"]
            # the weight storage chosen for this CPU; "vnni": the file is exact only on a CPU with VNNI
            result["onnx_weights"], result["cpu_needs"] = info["weights"], info["cpu_needs"]
            if info["cpu_needs"]:
                console.print(f"[yellow]the ONNX file needs a CPU with {info['cpu_needs'].upper()}:[/] {info['weights_choice']}")
            if info["seq_len_fixed"]:  # traced shapes: other lengths would fail or answer wrongly
                result["onnx_seq_len"] = info["seq_len_fixed"]
                console.print(f"[yellow]the ONNX file runs at {info['seq_len_fixed']} tokens only:[/] the model's "
                              "traced graph does not carry other lengths (give --seq-len for another)")
            if info["float_layers"]:
                console.print(f"[yellow]left in float in the ONNX graph:[/] {', '.join(info['float_layers'])}")
        # inside the folder, paths are the folder's own names: it can be moved
        atomic_write_json(work / RESULT_FILE, {k: v for k, v in result.items() if k != "out"}
                          | ({"onnx": ONNX_FILE} if onnx else {}))
    emit(result, json_, title=f"sparsa quantize {model}")


def _int(v: str) -> int:
    try:
        return int(v)
    except ValueError:
        raise SparsaError(f"--bits {v!r} is not a bit width", hint="use an integer in 2..8, 'ternary' or 'auto'") from None


def _check_glob(pattern: str) -> None:
    """--keep-float takes fnmatch patterns; an unclosed `[` would silently match a literal bracket."""
    if not pattern.strip():
        raise SparsaError("--keep-float '' names no layer", hint="give a module name or pattern, e.g. 'encoder.layer.0.*'")
    i = 0
    while i < len(pattern):
        if pattern[i] == "[":
            j = i + 1
            if j < len(pattern) and pattern[j] in "!]":  # `[!...]` negates; a `]` right after `[` is literal
                j += 1
            while j < len(pattern) and pattern[j] != "]":
                j += 1
            if j >= len(pattern):
                raise SparsaError(f"--keep-float {pattern!r} is not a valid pattern: '[' at position {i} is never closed",
                                  hint="patterns are shell-style globs (*, ?, [abc]); write [[] for a literal '['")
            i = j
        i += 1


def _check_keep_float_matches(lm, patterns: list[str]) -> None:
    """A --keep-float pattern that matches no quantizable layer is a typo, not a choice."""
    import fnmatch

    from torch import nn

    names = [n for n, m in lm.model.named_modules() if isinstance(m, nn.Linear)]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            examples = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise SparsaError(f"--keep-float {pattern!r} matches none of the model's {len(names)} Linear layers",
                              hint=f"layer names look like: {examples or '(the model has no Linear layer)'}")
