"""A recipe stage's fields and the CLI flags of the same technique have the same names and defaults.

Derived from the pydantic stage models and the typer commands' parameters (flag names with '-'
turned into '_'), not from a hand-kept list of options: a new field or flag that only one side
has, or a default that drifts, fails here. The few intentional differences are listed, each with
its reason."""

from __future__ import annotations

import dataclasses

import pytest
import typer

import sparsa.cli  # noqa: F401  registers the command modules
from sparsa.cli.app import app
from sparsa.prune.schedule_config import ScheduleConfig, schedule_defaults
from sparsa.recipe import AttentionStage, DecomposeStage, HardwareSpec, PruneStage, QuantizeStage, TolerancePruneStage

# Fields of every stage that are about the recipe, not the technique.
RECIPE_ONLY_COMMON = {"type", "name"}
# Parameters of every command that are about the command line, not the technique.
CLI_ONLY_COMMON = {"model", "out", "overwrite", "json_", "image_size", "frames"}  # sizes: the recipe's data: section

INTENTIONAL = {
    "prune": {
        # the seed is the recipe's top-level `seed` (one seed per run), the CLI's --seed;
        # --seq-len (the text length MACs are counted at): the recipe's evaluation.seq_len
        "cli_only": {"seed", "seq_len"},
        "recipe_only": set(),
    },
    "quantize": {
        # --seq-len (example length of the export): the recipe's evaluation.seq_len
        "cli_only": {"seq_len"},
        # mode: hybrid is `sparsa decompose --hybrid-quant` on the CLI (it needs PENNI layers), and its
        # hybrid_epochs is `sparsa decompose --hybrid-epochs` (compared in test_hybrid_quantization_is_one_verb);
        # onnx_fuse: the CLI's export fuses automatically (fuse="auto"), the recipe says it explicitly
        "recipe_only": {"mode", "hybrid_epochs", "onnx_fuse"},
    },
    "decompose": {
        # the seed is the recipe's top-level `seed` (PENNI's training) and data.seed (the splits);
        # --limit trims every split for quick runs (a recipe trains on its whole data)
        "cli_only": {"seed", "limit",
                     # ESCALATE: the recipe's `quantize` stage with mode: hybrid (after decompose) and
                     # its hybrid_epochs field (same name and default: test_hybrid_quantization_is_one_verb)
                     "hybrid_quant", "hybrid_epochs"},
        "recipe_only": set(),
    },
    "eval": {
        # --attention METHOD switches `sparsa eval` to the method: the stage's `method`
        "cli_only": {"attention",
                     # --head-ratio calibrates τ_H to a share of heads; a recipe calibrates with `sparsity`
                     "head_ratio",
                     # what `sparsa eval` measures besides attention: the recipe's evaluation: and data: sections
                     # (--samples: the recipe's evaluation.max_samples)
                     "reference", "data", "runs", "threads", "seq_len", "samples"},
        "recipe_only": {"method"},
    },
    "sim": {
        # the attention method and its options are the recipe's attention stage (checked there, below)
        # target: the model or workload, the recipe's top-level `model`
        "cli_only": {"target", "attention", "opt",
                     # inputs per batch: a recipe simulates one input (evaluation.latency.batch is CPU latency);
                     # --per-op: the JSON's detail
                     "batch", "per_op"},
        # params: nested overrides of the preset (the CLI takes a YAML file as --arch);
        # dense_baseline: a recipe also simulates the uncompressed model (the CLI: run sim on it)
        "recipe_only": {"params", "dense_baseline"},
    },
}
# The same setting, typed differently: `--bits` takes 'ternary' too (so it is text on the CLI).
CLI_DEFAULT_AS_RECIPE = {("quantize", "bits"): int}
# Defaults that differ on purpose: a recipe names one preset by default; `sparsa sim --arch` is required.
# A GEMM is "M,K,N" text on the command line, a list in YAML (both unset by default).
DEFAULT_DIFFERS = {("sim", "arch"): "a recipe's hardware section defaults to hdp-edge; --arch must be given"}


def _cli_params(command: str) -> dict:
    cmd = typer.main.get_command(app).commands[command]
    return {p.name: p.default for p in cmd.params}


def _fields(model) -> dict:
    return {k: (f.default_factory() if f.default_factory is not None else f.default)
            for k, f in model.model_fields.items()}


PAIRS = [("prune", PruneStage), ("quantize", QuantizeStage), ("decompose", DecomposeStage),
         ("eval", AttentionStage), ("sim", HardwareSpec)]


@pytest.mark.parametrize("command, stage", PAIRS)
def test_recipe_fields_and_cli_flags_agree(command, stage):
    flags, fields = _cli_params(command), _fields(stage)
    allowed = INTENTIONAL[command]
    if command == "prune":  # --tolerance switches `sparsa prune` to the tolerance schedule, whose flags are
        # the recipe's `tolerance-prune` stage (compared in test_tolerance_flags_and_stage_fields_agree)
        allowed = {**allowed, "cli_only": allowed["cli_only"] | (set(flags) & _tolerance_only_fields())}
    cli_only = set(flags) - set(fields) - CLI_ONLY_COMMON
    recipe_only = set(fields) - set(flags) - RECIPE_ONLY_COMMON
    assert cli_only == allowed["cli_only"], f"CLI flags of `sparsa {command}` with no recipe field: " \
                                            f"{sorted(cli_only - allowed['cli_only'])}"
    assert recipe_only == allowed["recipe_only"], f"recipe {stage.__name__} fields with no CLI flag: " \
                                                  f"{sorted(recipe_only - allowed['recipe_only'])}"
    for name in set(flags) & set(fields):
        if (command, name) in DEFAULT_DIFFERS:
            continue
        _assert_same_default(command, name, flags[name], fields[name])


def _assert_same_default(command, name, cli_default, recipe_default):
    if cli_default is None and recipe_default == []:  # a repeatable flag given no times
        cli_default = []
    cast = CLI_DEFAULT_AS_RECIPE.get((command, name))
    if cast is not None:
        cli_default = cast(cli_default)
    assert cli_default == recipe_default, (f"`sparsa {command} --{name.replace('_', '-')}` defaults to "
                                               f"{cli_default!r}, the recipe's {name} to {recipe_default!r}")


# `sparsa prune --tolerance`: the flags of `sparsa prune` less the one-shot mode's own, against the recipe's
# `tolerance-prune` stage.
ONESHOT_ONLY = set(PruneStage.model_fields) - set(TolerancePruneStage.model_fields)  # heads, ffn, channels, calib, ...
TOLERANCE_INTENTIONAL = {
    "cli_only": {"seq_len"},  # the one-shot mode's MAC length; refused with --tolerance (test_bad_input)
    # kinds: the CLI prunes the kinds whose --heads/--ffn/--channels is non-zero (all the model has when none
    # is), so the one-shot mode's flags name them; the recipe lists them
    "recipe_only": {"kinds"},
}
# --tolerance is optional on the CLI (None: the one-shot mode), required in the stage
TOLERANCE_DEFAULT_DIFFERS = {"tolerance"}


def _tolerance_only_fields() -> set:
    return set(TolerancePruneStage.model_fields) - set(PruneStage.model_fields)


def test_tolerance_flags_and_stage_fields_agree():
    flags = {k: v for k, v in _cli_params("prune").items() if k not in ONESHOT_ONLY | CLI_ONLY_COMMON}
    fields = {k: v for k, v in _fields(TolerancePruneStage).items() if k not in RECIPE_ONLY_COMMON}
    assert set(flags) - set(fields) == TOLERANCE_INTENTIONAL["cli_only"], \
        f"`sparsa prune --tolerance` flags with no tolerance-prune field: {sorted(set(flags) - set(fields))}"
    assert set(fields) - set(flags) == TOLERANCE_INTENTIONAL["recipe_only"], \
        f"tolerance-prune fields with no `sparsa prune` flag: {sorted(set(fields) - set(flags))}"
    for name in (set(flags) & set(fields)) - TOLERANCE_DEFAULT_DIFFERS:
        _assert_same_default("prune --tolerance", name, flags[name], fields[name])


def test_tolerance_stage_is_the_schedule_config():
    """Every tolerance-prune field (but `data`, what it is measured on) is a ScheduleConfig option, with its default:
    the config is the one home of names and defaults, and the pipeline hands the fields on by name."""
    options, defaults = {f.name for f in dataclasses.fields(ScheduleConfig)}, schedule_defaults()
    stage = {k: v for k, v in _fields(TolerancePruneStage).items() if k not in RECIPE_ONLY_COMMON | {"data"}}
    assert set(stage) <= options, f"tolerance-prune fields ScheduleConfig lacks: {sorted(set(stage) - options)}"
    for name in set(stage) - {"tolerance"}:
        assert stage[name] == defaults[name], f"tolerance-prune {name} defaults to {stage[name]!r}, " \
                                              f"ScheduleConfig to {defaults[name]!r}"


def test_schedule_flag_without_tolerance_is_refused(tmp_path):
    from typer.testing import CliRunner

    from sparsa.errors import SparsaError

    res = CliRunner().invoke(app, ["prune", "minilm", "--out", str(tmp_path / "p"), "--heads", "0.5",
                                   "--max-rounds", "3"])  # the app itself: SparsaError propagates (main() prints it)
    assert isinstance(res.exception, SparsaError), res.output
    assert res.exception.message == "--max-rounds sets the tolerance schedule" and "--tolerance" in res.exception.hint
    assert not (tmp_path / "p").exists()


def test_renamed_schedule_option_names_its_new_name():
    from sparsa.errors import SparsaError
    from sparsa.recipe import recipe_from_dict

    with pytest.raises(SparsaError, match="'rounds_max' is now called 'max_rounds'"):
        ScheduleConfig.from_opts(0.02, rounds_max=3)
    with pytest.raises(SparsaError, match="rounds_max.*is now called.*max_rounds"):
        recipe_from_dict({"name": "r", "model": "tiny-swin", "data": {"train": "digits"},
                          "stages": [{"type": "tolerance-prune", "tolerance": 0.02, "rounds_max": 3}]})


def test_recipe_importance_names_are_the_pruners():
    """The recipe accepts exactly the importance names `sparsa.prune.plan` does (criteria and aliases)."""
    from typing import get_args

    from sparsa.prune.plan import ALIASES, CRITERIA

    assert set(get_args(PruneStage.model_fields["importance"].annotation)) == set(CRITERIA) | set(ALIASES)


def test_oneshot_calibration_default_is_the_flags():
    from sparsa.prune.oneshot import CALIB_SAMPLES

    assert _cli_params("prune")["calib_samples"] == CALIB_SAMPLES == _fields(PruneStage)["calib_samples"]


def test_run_saved_under_the_old_option_names_still_resumes(tmp_path):
    """A .run/state.json written before `rounds_max` became `max_rounds` (and with importance 'l1', now stored
    as 'l1_group') is the same configuration, not "a run with a different configuration"."""
    import json

    from sparsa.prune.checkpoint import WORK_DIR, config_dict, saved_state

    cfg = ScheduleConfig.from_opts(0.02, kinds=("heads", "ffn"))
    old = config_dict(cfg)
    old["rounds_max"], old["importance"] = old.pop("max_rounds"), "l1"
    (tmp_path / WORK_DIR).mkdir()
    (tmp_path / WORK_DIR / "state.json").write_text(json.dumps({"version": 1, "config": old}))
    assert saved_state(tmp_path, cfg, {})["config"] == config_dict(cfg)
    other = ScheduleConfig.from_opts(0.02, kinds=("heads", "ffn"), max_rounds=3)
    with pytest.raises(Exception, match="different configuration"):
        saved_state(tmp_path, other, {})


def test_decompose_defaults_live_in_penni_config():
    """Every decompose setting the CLI and the recipe share defaults to PenniConfig's own default."""
    from dataclasses import fields

    from sparsa.decompose.penni import PenniConfig

    config = {f.name: f.default for f in fields(PenniConfig)}
    shared = set(_cli_params("decompose")) & set(_fields(DecomposeStage)) - {"method", "data"}
    assert shared <= set(config), f"shared settings PenniConfig lacks: {sorted(shared - set(config))}"
    for name in shared:
        assert _fields(DecomposeStage)[name] == config[name], f"recipe decompose.{name} vs PenniConfig.{name}"
    # and the stage builds exactly that config
    assert DecomposeStage(type="decompose").penni_config(seed=0) == PenniConfig(seed=0)


def test_sim_opt_keys_are_the_attention_stage_options():
    """`sparsa sim --opt K=V` takes the recipe attention stage's options, with the stage's range checks."""
    from sparsa.errors import SparsaError
    from sparsa.recipe import ATTENTION_OPTION_KEYS

    assert set(ATTENTION_OPTION_KEYS) <= set(_fields(AttentionStage))
    assert AttentionStage.from_cli_options("hdp", {"gap": 3}).options() == {"gap": 3.0}
    with pytest.raises(SparsaError, match="not an option"):
        AttentionStage.from_cli_options("hdp", {"gapp": 3})
    with pytest.raises(SparsaError, match="--opt ratio"):
        AttentionStage.from_cli_options("topk", {"ratio": 1.5})


def test_old_decompose_key_prune_std_reads_as_s():
    assert DecomposeStage(type="decompose", prune_std=0.5).s == 0.5
    with pytest.raises(ValueError, match="older name of s"):
        DecomposeStage(type="decompose", prune_std=0.5, s=1.0)


def test_hybrid_quantization_is_one_verb(monkeypatch):
    """`sparsa decompose --hybrid-epochs` and the recipe's hybrid quantize stage's hybrid_epochs share
    PenniConfig's default, and both orchestrations run escalate.quantize_hybrid."""
    import inspect

    from sparsa.decompose import escalate, flow
    from sparsa.decompose.penni import PenniConfig
    from sparsa.pipeline import stages

    default = PenniConfig.hybrid_epochs
    assert default > 0  # ESCALATE fine-tunes after quantizing
    assert _cli_params("decompose")["hybrid_epochs"] == _fields(QuantizeStage)["hybrid_epochs"] == default
    assert inspect.signature(escalate.quantize_hybrid).parameters["epochs"].default == default
    for caller in (flow.run_penni, stages.run_quantize):
        src = inspect.getsource(caller)
        assert "quantize_hybrid(" in src and "hybridize(" not in src and "hybrid_finetune(" not in src, caller
