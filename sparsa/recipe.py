"""Recipes: one YAML file that names the model, the data, the stages, the evaluation and the hardware.

    recipe = load_recipe("recipes/default.yaml")        # validated, or a SparsaError naming line + field
    recipe = recipe_from_dict(raw, overrides={"stages.prune.heads": 0.5})   # what sweeps do

Validation is pydantic (a discriminated union over the stage `type`); every error is mapped back to
the YAML line of the offending key through the node marks of `yaml.compose`, so a user reads
`recipes/x.yaml:12: stages[1].rho_b: Input should be less than or equal to 1`.
Nothing runs until the whole recipe is valid.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sparsa.attention.hdp import IMPORTANCE_VARIANTS
from sparsa.attention.methods import METHODS as ATTENTION_METHODS, check_method
from sparsa.data.model_input import MAX_FRAMES, MAX_IMAGE_SIZE
from sparsa.decompose.penni import PenniConfig
from sparsa.errors import SparsaError
from sparsa.prune.schedule_config import RENAMED as SCHEDULE_RENAMED
from sparsa.prune.schedule_config import schedule_defaults
from sparsa.safe_yaml import compose_and_load, read_yaml_text

BUILTIN_MODELS = ("minilm", "tiny-vit", "tiny-swin", "mnist-swin", "tiny-videomae", "tiny-cnn")
BUILTIN_DATA = ("sentences", "corpus", "fortunes", "digits", "mnist", "clips")
STAGE_TYPES = ("prune", "tolerance-prune", "quantize", "attention", "decompose")

Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # what every random generator sparsa uses accepts
_SCHEDULE = schedule_defaults()  # the tolerance schedule's defaults live in its config


class _Strict(BaseModel):
    # unknown keys are typos until proven otherwise
    # NaN and infinity are never a meaningful setting (NaN even passes every ge/le bound)
    model_config = ConfigDict(extra="forbid", frozen=False, allow_inf_nan=False)


# ---------------------------------------------------------------- stages


class PruneStage(_Strict):
    """One-shot structured pruning that physically removes heads, FFN neurons and channels."""

    type: Literal["prune"]
    name: str | None = None
    heads: Fraction = 0.0
    ffn: Fraction = 0.0
    channels: Fraction = 0.0
    # l1 = l1_group (docs/algorithms.md §2.4 default); l1_mean_producer (alias seed) reproduces seed 000 exactly
    # every name `sparsa.prune.plan` accepts (CRITERIA and ALIASES; tests/test_cli_recipe_names.py checks)
    importance: Literal["l1", "l1_group", "magnitude", "l1_mean_producer", "seed", "l2", "taylor", "activation",
                        "random"] = "l1"
    scope: Literal["layer", "global"] = "layer"
    calib: str | None = None  # data for activation/taylor importance; default: the recipe's calib set
    calib_samples: int = Field(64, ge=1, le=100_000)
    # after pruning, re-solve each attention-output and FFN-output projection by ridge least squares
    # so the pruned blocks match the dense ones on this many calibration samples (0: off)
    refit_samples: int = Field(0, ge=0, le=100_000)

    @model_validator(mode="after")
    def _something_to_do(self):
        if self.heads == 0 and self.ffn == 0 and self.channels == 0:
            raise ValueError("prune stage removes nothing: set heads, ffn or channels to a fraction in (0, 1)")
        return self


class TolerancePruneStage(_Strict):
    """Adaptive iterative pruning that stops when accuracy drops more than `tolerance` (seed 001).
    Fields are `sparsa.prune.schedule_config.ScheduleConfig` options, with its names and defaults
    (the same as `sparsa prune --tolerance`'s flags)."""

    type: Literal["tolerance-prune"]
    name: str | None = None
    tolerance: float = Field(..., gt=0.0, lt=1.0)  # allowed accuracy drop as a fraction (0.02 = 2 points)
    data: str | None = None  # labelled set (check/report/train splits); default: the recipe's data.train
    granularity: Literal["structured", "unstructured"] = _SCHEDULE["granularity"]  # seed 001: unstructured
    kinds: list[Literal["heads", "ffn", "channels"]] | None = _SCHEDULE["kinds"]  # None: those the model has
    scope: Literal["layer", "global"] = _SCHEDULE["scope"]
    importance: Literal["l1", "l1_group", "magnitude", "l1_mean_producer", "seed", "l2", "taylor", "activation",
                        "random"] = _SCHEDULE["importance"]
    max_rounds: int = Field(_SCHEDULE["max_rounds"], ge=1, le=1000)
    budget_s: float | None = Field(_SCHEDULE["budget_s"], gt=0)  # wall-clock budget; the last accepted state is kept
    round_recovery_epochs: float = Field(_SCHEDULE["round_recovery_epochs"], ge=0.0, le=100.0)
    trial_recovery_steps: int = Field(_SCHEDULE["trial_recovery_steps"], ge=0, le=100_000)
    rollback: bool = _SCHEDULE["rollback"]
    seed: Seed = _SCHEDULE["seed"]

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, raw):
        if isinstance(raw, dict):
            old = sorted(set(raw) & set(SCHEDULE_RENAMED))
            if old:
                raise ValueError(f"`{old[0]}` is now called `{SCHEDULE_RENAMED[old[0]]}` (the name `sparsa prune "
                                 f"--{SCHEDULE_RENAMED[old[0]].replace('_', '-')}` uses); rename the key")
        return raw


class QuantizeStage(_Strict):
    """Weight (and optionally activation) quantization; `hybrid` = ESCALATE (8-bit basis, ternary coefficients)."""

    type: Literal["quantize"]
    name: str | None = None
    mode: Literal["standard", "hybrid"] = "standard"
    # mode hybrid: epochs of fine-tuning that see the 8-bit/ternary values, on data.train (as --hybrid-epochs)
    hybrid_epochs: int = Field(PenniConfig.hybrid_epochs, ge=0, le=1000)
    # "auto": 8 on a CPU with VNNI (exact and as fast as 7 on ORT's u8×s8 kernels), else 7 (sparsa.quant.kernels)
    bits: int | Literal["auto"] = 8
    scheme: Literal["sym", "asym"] = "sym"
    clip: Literal["max", "percentile", "search"] = "search"
    per_channel: bool = True
    objective: Literal["weight", "output"] = "weight"  # the clipping search minimises the weight or layer-output error
    keep_float: list[str] = Field(default_factory=list)  # module-name patterns (fnmatch) left in float
    # none | dynamic (run-time per-tensor range, as ORT's integer kernels compute) | static (calibrated);
    # true / false are the older spellings of static / none
    activations: bool | Literal["none", "dynamic", "static"] = "none"
    calib: str | None = None
    calib_samples: int = Field(32, ge=1, le=100_000)
    smooth: float | None = Field(None, ge=0.0, le=1.0)  # SmoothQuant strength (BERT family: the fused layout)
    # FFN-out's own strength (None: not smoothed); without `smooth`, only the FFN-out layers are smoothed
    smooth_ffn_out: float | None = Field(None, ge=0.0, le=1.0)
    smooth_budget: float | None = Field(None, ge=0.0, lt=1.0)  # keep only the smoothing Muls that pay (text models)
    float_storage: Literal["float32", "float16"] = "float32"  # how what stays float is stored
    onnx: bool = False  # also export an integer ONNX model (ORT latency is measured on it)
    embeddings: Literal["int8", "int4", "float"] = "int8"  # ONNX: how the embedding tables are stored
    onnx_fuse: bool = False  # BERT only: ORT's transformer fusions before integer export (faster)
    # ONNX: residual sums as their own ops (None, the default, or True), or left to ORT's slower fused
    # SkipLayerNormalization (False)
    split_layernorm: bool | None = None
    fast_gelu: bool = False  # with onnx_fuse: ORT's tanh-approximated FastGelu instead of the exact erf GELU

    @field_validator("bits")
    @classmethod
    def _bit_width(cls, v):
        if v != "auto" and not 2 <= v <= 8:  # one message (a constrained int in the union would add a second)
            raise ValueError("Input should be a bit width in 2..8, or 'auto'")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        if self.smooth_budget is not None and self.smooth is None:
            raise ValueError("smooth_budget trims the smoothing of a smoothed model: set smooth (e.g. 0.5) too")
        if self.fast_gelu and not (self.onnx and self.onnx_fuse):
            raise ValueError("fast_gelu lays out the fused ONNX export: set onnx and onnx_fuse too")
        if self.split_layernorm is not None and not self.onnx:
            raise ValueError("split_layernorm lays out the ONNX export: set onnx too, or drop it")
        return self


# the options an attention method takes (the rest of AttentionStage is which method, and calibration)
ATTENTION_OPTION_KEYS = ("rho_b", "gap", "ratio", "tau_h", "block", "importance")


class AttentionStage(_Strict):
    """Dynamic attention pruning installed into the model (HDP, seed 002, and its baselines).

    The method's typed options: `sparsa eval --attention M` takes them as flags of the same names
    and `sparsa sim --attention M --opt KEY=VALUE` as KEY=VALUE pairs checked by this model
    (`from_cli_options`)."""

    type: Literal["attention"]
    name: str | None = None
    method: Literal[ATTENTION_METHODS] = "hdp"
    rho_b: float | None = Field(None, ge=-1.0, le=1.0)  # hdp-seed / energon row ratio
    gap: float | None = Field(None, ge=0.0, le=64.0)  # hdp (default variant) row gap
    ratio: Fraction | None = None  # topk / spatten: fraction pruned
    tau_h: float | None = Field(None, ge=0.0)  # head threshold
    sparsity: Fraction | None = None  # calibrate the method's knob to this block sparsity instead
    block: int | None = Field(None, ge=1, le=64)
    importance: Literal[IMPORTANCE_VARIANTS] | None = None

    def options(self) -> dict:
        """The method's keyword options (unset ones left to the method's defaults)."""
        return {k: getattr(self, k) for k in ATTENTION_OPTION_KEYS if getattr(self, k) is not None}

    @classmethod
    def from_cli_options(cls, method: str, opts: dict, flags: bool = False) -> "AttentionStage":
        """The stage `--attention METHOD --opt K=V ...` spells (flags=True: `--attention METHOD --k V`),
        or a SparsaError naming the bad option as the user wrote it."""
        check_method(method)

        def spelt(k):
            return "--" + k.replace("_", "-") if flags else f"--opt {k}"
        unknown = sorted(set(opts) - set(ATTENTION_OPTION_KEYS) - {"sparsity"})
        if unknown:
            raise SparsaError(f"{', '.join(map(spelt, unknown))}: not an option of the attention methods",
                              hint=f"options (the recipe's attention stage fields): {', '.join(ATTENTION_OPTION_KEYS)}")
        try:
            return cls(type="attention", method=method, **opts)
        except ValidationError as e:
            err = e.errors()[0]
            where = "--attention" if err["loc"][0] == "method" else spelt(err["loc"][0])
            hint = (f"methods: {', '.join(ATTENTION_METHODS)}" if where == "--attention"
                    else "the ranges are the recipe's attention stage's (docs/attention.md)")
            raise SparsaError(f"{where}: {err['msg']}", hint=hint) from None


_PENNI = PenniConfig  # the technique's config: every default below is its field's default


class DecomposeStage(_Strict):
    """PENNI kernel decomposition: shared basis kernels + sparse coefficients (seed 003).

    The fields are PenniConfig's, with its defaults and `sparsa decompose`'s flag names
    (tests/test_cli_recipe_names.py checks); `penni_config` builds the config `flow.run_penni` runs."""

    type: Literal["decompose"]
    name: str | None = None
    method: Literal["penni"] = "penni"
    basis: int | None = Field(_PENNI.basis, ge=1, le=64)  # None: 5 where the kernel volume exceeds 5 (ref)
    linear: bool = _PENNI.linear  # also decompose Linear layers (16-input segments)
    # coefficient threshold = s * std(C); None: 1.0 (ref) with penalty l1, 0 with group
    s: float | None = Field(_PENNI.s, ge=0.0, le=10.0)
    tolerance: float | None = Field(_PENNI.tolerance, gt=0.0, lt=1.0)  # instead: largest s within this accuracy drop (fraction)
    retrain_epochs: int = Field(_PENNI.retrain_epochs, ge=0, le=1000)  # L1-penalised retraining
    finetune_epochs: int = Field(_PENNI.finetune_epochs, ge=0, le=1000)  # after pruning
    lam: float = Field(_PENNI.lam, ge=0.0)  # penalty weight λ
    shrink: Literal["safe", "ref", "none"] = _PENNI.shrink
    merge: bool = _PENNI.merge  # fold the shrunk layers back into dense convolutions
    fold_bn: bool = _PENNI.fold_bn
    # "l1": the seed's coefficient L1 + std threshold; "group": group lasso + channel pruning (docs/penni.md)
    penalty: Literal["l1", "group"] = _PENNI.penalty
    channel_s: float = Field(_PENNI.channel_s, ge=0.0)  # penalty="group": drop channels below this × group mean
    channel_fraction: float | None = Field(_PENNI.channel_fraction, gt=0.0, lt=1.0)  # instead: this fraction per group
    data: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, raw):
        # `prune_std` is the older name of `s` (the CLI's --s): still read, never both
        if isinstance(raw, dict) and "prune_std" in raw:
            if "s" in raw:
                raise ValueError("prune_std is the older name of s: give only s")
            raw = {("s" if k == "prune_std" else k): v for k, v in raw.items()}
        return raw

    def penni_config(self, seed: int) -> PenniConfig:
        keys = ("basis", "linear", "s", "tolerance", "retrain_epochs", "finetune_epochs", "lam", "shrink", "merge",
                "fold_bn", "penalty", "channel_s", "channel_fraction")
        return PenniConfig(seed=seed, **{k: getattr(self, k) for k in keys})


Stage = Annotated[
    Union[PruneStage, TolerancePruneStage, QuantizeStage, AttentionStage, DecomposeStage],
    Field(discriminator="type"),
]


# ---------------------------------------------------------------- the rest


class DataSpec(_Strict):
    train: str | None = None  # fine-tuning / tolerance check data
    calib: str | None = None  # calibration (quantization ranges, activation importance)
    eval: str | None = None  # held-out evaluation; for text models the fidelity sentences
    seed: Seed = 0
    # images / clips come at the model's input size; these override it (like --image-size / --frames)
    image_size: int | None = Field(None, ge=1, le=MAX_IMAGE_SIZE)
    frames: int | None = Field(None, ge=1, le=MAX_FRAMES)


class LatencySpec(_Strict):
    torch: bool = True
    onnxruntime: bool = False
    runs: int = Field(20, ge=1, le=10_000)
    warmup: int = Field(3, ge=0, le=1000)
    threads: int = Field(2, ge=1, le=256)
    batch: int = Field(1, ge=1, le=1024)


class EvaluationSpec(_Strict):
    quality: bool = True  # fidelity for text models, accuracy for classifiers
    per_stage: bool = True  # size/quality after every stage, not only at the end
    max_samples: int | None = Field(None, ge=1)
    seq_len: int = Field(128, ge=1, le=8192)  # text input length for MACs, latency and workload
    latency: LatencySpec | None = Field(default_factory=LatencySpec)


class HardwareSpec(_Strict):
    arch: str = "hdp-edge"  # preset name or a YAML file
    params: dict[str, Any] = Field(default_factory=dict)  # nested overrides of the preset's fields
    seq_len: int | None = Field(None, ge=1, le=8192)  # default: evaluation.seq_len
    dense_baseline: bool = True  # also simulate the uncompressed model for speedup / energy ratios
    gemm: list[int] | None = None  # simulator-only recipe: one M,K,N GEMM, no model

    @field_validator("gemm")
    @classmethod
    def _gemm_shape(cls, v):
        if v is not None and (len(v) != 3 or any(int(x) < 1 for x in v)):
            raise ValueError("gemm must be three positive integers [M, K, N]")
        return v


class ReportSpec(_Strict):
    html: bool = True
    save_model: bool = False


class Recipe(_Strict):
    name: str = Field(..., min_length=1)
    description: str = ""
    model: str | None = None
    seed: Seed = 0
    data: DataSpec = Field(default_factory=DataSpec)
    stages: list[Stage] = Field(default_factory=list)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    hardware: HardwareSpec | None = None
    report: ReportSpec = Field(default_factory=ReportSpec)

    @model_validator(mode="after")
    def _coherent(self):
        if self.model is None and (self.hardware is None or self.hardware.gemm is None):
            raise ValueError("recipe needs a model (or a hardware.gemm for a simulator-only recipe)")
        if self.model is not None and self.hardware is not None and self.hardware.gemm is not None:
            raise ValueError("hardware.gemm is for simulator-only recipes; remove it or remove model")
        if self.model is None and self.stages:
            raise ValueError("stages need a model to work on")
        # `--set stages.NAME.x` and sweep grids address a stage by its name: two stages of one name would
        # make the override silently hit the first
        names = [st.name for st in self.stages if st.name is not None]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"stage name(s) {', '.join(map(repr, twice))} given to more than one stage: "
                             "overrides (stages.NAME.option) could not tell them apart; give each stage its own name")
        seen_decompose = merged = False
        for st in self.stages:
            if isinstance(st, DecomposeStage):
                seen_decompose, merged = True, st.merge
            if isinstance(st, QuantizeStage) and st.mode == "hybrid" and not seen_decompose:
                raise ValueError("quantize mode 'hybrid' quantizes PENNI basis/coefficients: put a decompose stage before it")
            if isinstance(st, QuantizeStage) and st.mode == "hybrid" and merged:
                raise ValueError("quantize mode 'hybrid' needs the basis/coefficient split that decompose merge: true "
                                 "folds away: drop merge")
        return self

    # ------------------------------------------------------------ helpers

    def stage_labels(self) -> list[str]:
        """Unique, readable label per stage (`prune`, `quantize`, `prune#2` ...)."""
        labels, counts = [], {}
        for st in self.stages:
            base = st.name or st.type
            counts[base] = counts.get(base, 0) + 1
            labels.append(base if counts[base] == 1 else f"{base}#{counts[base]}")
        return labels

    def canonical(self) -> dict:
        return self.model_dump(mode="json")

    def digest(self) -> str:
        """Short hash of the validated recipe: same content, same digest."""
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


# ---------------------------------------------------------------- loading


class LoadedRecipe:
    """A validated recipe plus where it came from (for provenance in reports)."""

    def __init__(self, recipe: Recipe, raw: dict, source: str, base_dir: Path, overrides: dict | None = None):
        self.recipe = recipe
        self.raw = raw
        self.source = source
        self.base_dir = base_dir
        self.overrides = dict(overrides or {})

    def __getattr__(self, item):  # recipe fields read through
        return getattr(self.recipe, item)

    def resolve_path(self, name: str | None) -> str | None:
        """Built-in names stay; relative paths are taken relative to the recipe's folder when they exist there."""
        if name is None or name in BUILTIN_MODELS or name in BUILTIN_DATA:
            return name
        p = Path(os.path.expanduser(name))
        if not p.is_absolute() and _exists(self.base_dir / p):
            return str(self.base_dir / p)
        return str(p)


def _exists(p: Path) -> bool:
    try:
        return p.exists()
    except OSError:  # a name too long for the file system (or otherwise unusable) names nothing
        return False


def default_recipe_path() -> Path:
    """The bundled default (also installed with the package)."""
    return Path(__file__).parent / "recipes" / "default.yaml"


def bundled_recipes() -> dict[str, Path]:
    return {p.stem: p for p in sorted((Path(__file__).parent / "recipes").glob("*.yaml"))}


def load_recipe(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> LoadedRecipe:
    """Read, parse and validate a recipe file. `path` may also name a bundled recipe (e.g. `default`)."""
    p = Path(path)
    if not _exists(p):
        bundled = bundled_recipes()
        if str(path) in bundled:
            p = bundled[str(path)]
        else:
            raise SparsaError(
                f"recipe file {path} not found",
                hint=f"give a YAML file, or one of the bundled recipes: {', '.join(bundled) or '(none)'}",
            )
    text = read_yaml_text(p, "recipe")
    return parse_recipe(text, source=str(p), base_dir=p.resolve().parent, overrides=overrides)


def parse_recipe(
    text: str, source: str = "<recipe>", base_dir: Path | None = None, overrides: dict[str, Any] | None = None
) -> LoadedRecipe:
    raw, node = compose_and_load(text, source)
    if node is not None:
        _reject_duplicate_keys(node, source)
    if raw is None:
        raise SparsaError(f"{source}: the recipe is empty", hint="start from recipes/default.yaml")
    if not isinstance(raw, dict):
        raise SparsaError(f"{source}:1: a recipe must be a mapping (name:, model:, stages: ...), got {type(raw).__name__}")
    base = base_dir or Path.cwd()
    return recipe_from_dict(raw, overrides=overrides, source=source, base_dir=base, _node=node)


def recipe_from_dict(
    raw: dict,
    overrides: dict[str, Any] | None = None,
    source: str = "<recipe>",
    base_dir: Path | None = None,
    _node=None,
) -> LoadedRecipe:
    """Validate a raw (already parsed) recipe, after applying dotted-path overrides."""
    data = apply_overrides(raw, overrides or {}) if overrides else copy.deepcopy(raw)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        raise SparsaError(
            _format_validation(e, source, _node if not overrides else None, overrides or {}),
            hint="see docs/pipeline.md for every stage and option",
        ) from None
    loaded = LoadedRecipe(recipe, data, source, base_dir or Path.cwd(), overrides)
    _check_names(loaded, _node)
    return loaded


def _check_names(loaded: LoadedRecipe, node) -> None:
    """Model and data names must be built-in or existing paths: fail before any work starts."""
    r = loaded.recipe
    checks: list[tuple[tuple, str | None, tuple]] = [(("model",), r.model, BUILTIN_MODELS)]
    for f in ("train", "calib", "eval"):
        checks.append((("data", f), getattr(r.data, f), BUILTIN_DATA))
    for i, st in enumerate(r.stages):
        for f in ("calib", "data"):
            if hasattr(st, f):
                checks.append((("stages", i, f), getattr(st, f), BUILTIN_DATA))
    if r.hardware is not None:
        try:
            from sparsa.hw.arch import list_presets

            checks.append((("hardware", "arch"), r.hardware.arch, tuple(list_presets())))
        except ImportError:  # a build without the simulator: the run step says so
            pass
    for loc, value, builtin in checks:
        if value is None or value in builtin:
            continue
        if not _exists(Path(loaded.resolve_path(value))):
            line = _line_of(node, loc)
            where = f"{loaded.source}:{line}" if line else loaded.source
            kind = {("model",): "model", ("hardware", "arch"): "architecture preset"}.get(loc, "data set")
            raise SparsaError(
                f"{where}: {_loc_str(loc)}: {kind} {value!r} is neither built in nor an existing path",
                hint=f"built-in {kind}s: {', '.join(builtin)}",
            )


# ---------------------------------------------------------------- overrides (sweeps)


def apply_overrides(raw: dict, overrides: dict[str, Any]) -> dict:
    """Set dotted paths in a copy of a raw recipe.

    `stages.0.heads` indexes the stage list; `stages.prune.heads` names the first stage of that type
    (or with that `name`); `hardware.params.pe_rows` creates nested keys as needed.
    """
    out = copy.deepcopy(raw)
    for path, value in overrides.items():
        parts = str(path).split(".")
        cur: Any = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            here = ".".join(parts[: i + 1])
            if isinstance(cur, list):
                idx = _list_index(cur, part, path)
                if last:
                    cur[idx] = value
                else:
                    cur = cur[idx]
            elif isinstance(cur, dict):
                if last:
                    cur[part] = value
                else:
                    if cur.get(part) is None:
                        cur[part] = [] if part == "stages" else {}
                    cur = cur[part]
            else:
                raise SparsaError(
                    f"override {path!r}: {here!r} goes into a {type(cur).__name__}, not a mapping or list",
                    hint="dotted paths walk mappings by key and lists by index or stage type",
                )
    return out


def _list_index(items: list, part: str, path: str) -> int:
    if part.lstrip("-").isdigit():
        idx = int(part)
        if not -len(items) <= idx < len(items):
            raise SparsaError(f"override {path!r}: index {idx} is outside a list of {len(items)}",
                              hint=f"give an index from 0 to {len(items) - 1} (or -1 for the last), or a stage's "
                                   "name or type")
        return idx
    for j, it in enumerate(items):
        if isinstance(it, dict) and (it.get("name") == part or it.get("type") == part):
            return j
    kinds = [it.get("name") or it.get("type") for it in items if isinstance(it, dict)]
    raise SparsaError(
        f"override {path!r}: no stage named or typed {part!r}",
        hint=f"stages in this recipe: {', '.join(map(str, kinds)) or '(none)'}",
    )


# ---------------------------------------------------------------- error messages with line numbers


def _reject_duplicate_keys(node, source: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen = {}
        for k, v in node.value:
            key = getattr(k, "value", None)
            if key in seen:
                raise SparsaError(
                    f"{source}:{k.start_mark.line + 1}: key {key!r} appears twice (first on line {seen[key]})",
                    hint="remove one of them; YAML would silently keep only the last",
                )
            seen[key] = k.start_mark.line + 1
            _reject_duplicate_keys(v, source)
    elif isinstance(node, yaml.SequenceNode):
        for v in node.value:
            _reject_duplicate_keys(v, source)


def _line_of(node, loc: tuple) -> int | None:
    """1-based line of the YAML key/item the pydantic location points at (deepest one that exists)."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == str(part):
                    line = k.start_mark.line + 1
                    node = v
                    break
            else:
                continue  # a union tag (stage type) or a missing field: stay on the enclosing mapping
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _loc_str(loc: tuple) -> str:
    s = ""
    for part in loc:
        if isinstance(part, int):
            s += f"[{part}]"
        elif part in STAGE_TYPES and s.startswith("stages"):
            continue  # pydantic's union tag, not a field the user wrote
        else:
            s += ("." if s else "") + str(part)
    return s or "(recipe)"


def _format_validation(e: ValidationError, source: str, node, overrides: dict) -> str:
    lines = []
    for err in e.errors():
        loc = tuple(err["loc"])
        msg = err["msg"]
        if err["type"] == "union_tag_invalid":
            tag = (err.get("ctx") or {}).get("tag")
            msg = f"unknown stage type {tag!r}; expected one of: {', '.join(STAGE_TYPES)}"
        elif err["type"] == "union_tag_not_found":
            msg = f"stage has no 'type'; give one of: {', '.join(STAGE_TYPES)}"
        elif err["type"] == "extra_forbidden":
            msg = "unknown option (typo?)"
            parent = _parent_model(loc)
            if parent is not None:
                msg += f"; valid options: {', '.join(k for k in parent.model_fields if k != 'type')}"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        line = _line_of(node, loc)
        where = f"{source}:{line}" if line else source
        if overrides:
            where += f" (with overrides {overrides})"
        lines.append(f"{where}: {_loc_str(loc)}: {msg}")
    head = "invalid recipe" if len(lines) == 1 else f"invalid recipe ({len(lines)} problems)"
    return head + ":\n  " + "\n  ".join(lines)


_STAGE_BY_TYPE = {
    "prune": PruneStage,
    "tolerance-prune": TolerancePruneStage,
    "quantize": QuantizeStage,
    "attention": AttentionStage,
    "decompose": DecomposeStage,
}


def _parent_model(loc: tuple):
    """The pydantic model that owns the field at `loc` (to list its valid options)."""
    model: Any = Recipe
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if model is None:  # inside the stage list: the next part is the union tag
            model = _STAGE_BY_TYPE.get(part)
            if model is None:
                return None
            continue
        f = model.model_fields.get(part)
        if f is None:
            return None
        if part == "stages" and model is Recipe:
            model = None
            continue
        ann = f.annotation
        model = next(
            (a for a in (ann, *getattr(ann, "__args__", ())) if isinstance(a, type) and issubclass(a, BaseModel)),
            None,
        )
        if model is None:
            return None
    return model
