"""A recipe stage's fields and the CLI flags of the same technique have the same names and defaults.

Derived from the pydantic stage models and the typer commands' parameters (flag names with '-'
turned into '_'), not from a hand-kept list of options: a new field or flag that only one side
has, or a default that drifts, fails here. The few intentional differences are listed, each with
its reason."""

from __future__ import annotations

import pytest
import typer

import sparsa.cli  # noqa: F401  registers the command modules
from sparsa.cli.app import app
from sparsa.recipe import PruneStage, QuantizeStage

# Fields of every stage that are about the recipe, not the technique.
RECIPE_ONLY_COMMON = {"type", "name"}
# Parameters of every command that are about the command line, not the technique.
CLI_ONLY_COMMON = {"model", "out", "overwrite", "json_", "image_size", "frames"}  # sizes: the recipe's data: section

INTENTIONAL = {
    "prune": {
        # the seed is the recipe's top-level `seed` (one seed per run), the CLI's --seed
        "cli_only": {"seed",
                     # --tolerance / --data switch `sparsa prune` to the tolerance schedule: the recipe's
                     # `tolerance-prune` stage
                     "tolerance", "data"},
        "recipe_only": set(),
    },
    "quantize": {
        # --seq-len (example length of the export): the recipe's evaluation.seq_len
        "cli_only": {"seq_len"},
        # mode: hybrid is `sparsa decompose --hybrid-quant` on the CLI (it needs PENNI layers);
        # onnx_fuse: the CLI's export fuses automatically (fuse="auto"), the recipe says it explicitly
        "recipe_only": {"mode", "onnx_fuse"},
    },
}
# The same setting, typed differently: `--bits` takes 'ternary' too (so it is text on the CLI).
CLI_DEFAULT_AS_RECIPE = {("quantize", "bits"): int}


def _cli_params(command: str) -> dict:
    cmd = typer.main.get_command(app).commands[command]
    return {p.name: p.default for p in cmd.params}


def _fields(model) -> dict:
    return {k: (f.default_factory() if f.default_factory is not None else f.default)
            for k, f in model.model_fields.items()}


@pytest.mark.parametrize("command, stage", [("prune", PruneStage), ("quantize", QuantizeStage)])
def test_recipe_fields_and_cli_flags_agree(command, stage):
    flags, fields = _cli_params(command), _fields(stage)
    allowed = INTENTIONAL[command]
    cli_only = set(flags) - set(fields) - CLI_ONLY_COMMON
    recipe_only = set(fields) - set(flags) - RECIPE_ONLY_COMMON
    assert cli_only == allowed["cli_only"], f"CLI flags of `sparsa {command}` with no recipe field: " \
                                            f"{sorted(cli_only - allowed['cli_only'])}"
    assert recipe_only == allowed["recipe_only"], f"recipe {stage.__name__} fields with no CLI flag: " \
                                                  f"{sorted(recipe_only - allowed['recipe_only'])}"
    for name in set(flags) & set(fields):
        cli_default = flags[name]
        if cli_default is None and fields[name] == []:  # a repeatable flag given no times
            cli_default = []
        cast = CLI_DEFAULT_AS_RECIPE.get((command, name))
        if cast is not None:
            cli_default = cast(cli_default)
        assert cli_default == fields[name], (f"`sparsa {command} --{name.replace('_', '-')}` defaults to "
                                             f"{cli_default!r}, the recipe's {name} to {fields[name]!r}")


def test_recipe_importance_names_are_the_pruners():
    """The recipe accepts exactly the importance names `sparsa.prune.plan` does (criteria and aliases)."""
    from typing import get_args

    from sparsa.prune.plan import ALIASES, CRITERIA

    assert set(get_args(PruneStage.model_fields["importance"].annotation)) == set(CRITERIA) | set(ALIASES)


def test_oneshot_calibration_default_is_the_flags():
    from sparsa.prune.oneshot import CALIB_SAMPLES

    assert _cli_params("prune")["calib_samples"] == CALIB_SAMPLES == _fields(PruneStage)["calib_samples"]
