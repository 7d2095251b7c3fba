"""Recipes: every bad input is refused before any work, with the YAML line and the field named."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from sparsa.errors import SparsaError
from sparsa.recipe import apply_overrides, bundled_recipes, load_recipe, parse_recipe, recipe_from_dict


def _err(text: str) -> str:
    with pytest.raises(SparsaError) as e:
        parse_recipe(textwrap.dedent(text), source="r.yaml")
    return str(e.value)  # message + hint


def test_out_of_range_option_names_line_and_field():
    msg = _err("""\
        name: x
        model: minilm
        stages:
          - type: prune
            heads: 0.25
          - type: attention
            method: hdp
            rho_b: 3
        """)
    assert "r.yaml:8: stages[1].rho_b:" in msg
    assert "less than or equal to 1" in msg


def test_fraction_of_one_is_refused():
    msg = _err("""\
        name: x
        model: minilm
        stages:
          - type: prune
            heads: 1.0
        """)
    assert "r.yaml:5: stages[0].heads:" in msg


def test_unknown_stage_lists_the_valid_ones():
    msg = _err("""\
        name: x
        model: minilm
        stages:
          - type: quantise
            bits: 8
        """)
    assert "r.yaml:4: stages[0]: unknown stage type 'quantise'" in msg
    assert "quantize" in msg and "tolerance-prune" in msg


def test_unknown_option_is_a_typo_with_the_valid_options():
    msg = _err("""\
        name: x
        model: minilm
        stages:
          - type: quantize
            bitz: 4
        """)
    assert "r.yaml:5: stages[0].bitz: unknown option" in msg
    assert "bits" in msg and "scheme" in msg


def test_several_problems_are_all_reported():
    msg = _err("""\
        name: x
        model: minilm
        evaluation:
          latency:
            runs: 0
        stages:
          - type: quantize
            bits: 9
            scheme: offset
        """)
    assert "3 problems" in msg
    assert "r.yaml:5: evaluation.latency.runs" in msg
    assert "r.yaml:8: stages[0].bits" in msg
    assert "r.yaml:9: stages[0].scheme" in msg


def test_malformed_yaml_points_at_the_line():
    msg = _err("name: x\nmodel: minilm\nstages:\n  - type: prune\n    heads: [0.5\n")
    assert msg.startswith("r.yaml:6:") and "malformed YAML" in msg


def test_duplicate_keys_are_refused():
    msg = _err("name: x\nmodel: minilm\nname: y\n")
    assert "r.yaml:3: key 'name' appears twice (first on line 1)" in msg


def test_missing_model_and_unknown_model_and_data():
    assert "recipe needs a model" in _err("name: x\n")
    msg = _err("name: x\nmodel: minilm\ndata:\n  eval: no-such-set\n")
    assert "r.yaml:4: data.eval: data set 'no-such-set' is neither built in nor an existing path" in msg
    msg = _err("name: x\nmodel: ./nowhere\n")
    assert "r.yaml:2: model:" in msg


def test_stage_that_does_nothing_and_hybrid_without_decompose():
    assert "removes nothing" in _err("name: x\nmodel: minilm\nstages:\n  - type: prune\n")
    msg = _err("name: x\nmodel: tiny-cnn\nstages:\n  - type: quantize\n    mode: hybrid\n")
    assert "decompose stage before it" in msg


def test_unknown_hardware_preset_names_line():
    pytest.importorskip("sparsa.hw.arch")
    msg = _err("name: x\nmodel: minilm\nhardware:\n  arch: hdp-tiny\n")
    assert "r.yaml:4: hardware.arch:" in msg and "hdp-edge" in msg


def test_every_bundled_recipe_validates():
    names = set(bundled_recipes())
    assert {"default", "seed000_video_channels", "seed001_tolerance_quant", "seed002_hdp", "seed003_penni"} <= names
    for name, path in bundled_recipes().items():
        r = load_recipe(path)
        assert r.recipe.name
        assert len(r.recipe.digest()) == 12


def test_default_recipe_is_the_issue_pipeline():
    # the point of bench/front.py's measured front (tests/test_report_front.py checks it is the chosen one)
    r = load_recipe("default").recipe
    assert r.model == "minilm"
    assert [s.type for s in r.stages] == ["quantize"]
    q = r.stages[0]
    assert (q.bits, q.scheme, q.clip, q.onnx) == (7, "sym", "search", True)
    assert r.evaluation.latency.torch and r.evaluation.latency.onnxruntime
    assert r.hardware.arch == "hdp-edge"
    # every technique in one pipeline: the recipe the sweep grid varies
    full = load_recipe("minilm_prune_hdp").recipe
    assert [s.type for s in full.stages] == ["prune", "attention", "quantize"]


def test_overrides_by_index_type_and_nested_keys():
    raw = {"name": "x", "model": "minilm", "stages": [{"type": "prune", "heads": 0.25}, {"type": "quantize"}]}
    out = apply_overrides(raw, {"stages.prune.heads": 0.5, "stages.1.bits": 4, "hardware.params.array.rows": 8})
    assert out["stages"][0]["heads"] == 0.5 and out["stages"][1]["bits"] == 4
    assert out["hardware"] == {"params": {"array": {"rows": 8}}}
    assert raw["stages"][0]["heads"] == 0.25  # the original is untouched
    with pytest.raises(SparsaError, match="no stage named or typed 'decompose'"):
        apply_overrides(raw, {"stages.decompose.basis": 3})
    with pytest.raises(SparsaError, match="index 5 is outside"):
        apply_overrides(raw, {"stages.5.bits": 3})
    with pytest.raises(SparsaError, match="stages\\[1\\].bits"):
        recipe_from_dict(raw, overrides={"stages.quantize.bits": 16})
    # same content, same digest; a change, another digest
    a = recipe_from_dict(raw).recipe.digest()
    assert a == recipe_from_dict(dict(raw)).recipe.digest()
    assert a != recipe_from_dict(raw, overrides={"stages.prune.heads": 0.5}).recipe.digest()


def test_cli_reports_recipe_errors_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: minilm\nstages:\n  - type: attention\n    method: hdp\n    block: 0\n")
    env = dict(os.environ, COLUMNS="400")  # rich wraps long lines at the terminal width
    r = subprocess.run([sys.executable, "-m", "sparsa", "run", str(bad)], capture_output=True, text=True, timeout=60,
                       env=env)
    assert r.returncode == 2
    assert f"{bad}:6: stages[0].block" in r.stderr
    assert "Traceback" not in r.stderr


def test_data_of_the_wrong_kind_for_the_model_is_refused(tmp_path):
    # only knowable once the model is loaded: text sentences for an image classifier
    from sparsa.pipeline import run_recipe

    loaded = recipe_from_dict({"name": "mm", "model": "tiny-vit", "data": {"eval": "sentences"},
                               "evaluation": {"latency": None}, "report": {"html": False}})
    with pytest.raises(SparsaError, match="'sentences' \\(test split\\) is text, but the model takes image"):
        run_recipe(loaded, tmp_path / "mm", quiet=True)


def test_output_folder_blocked_by_a_file_is_a_sparsa_error(tmp_path):
    from sparsa.dse.store import SweepStore
    from sparsa.pipeline import run_recipe

    blocker = tmp_path / "f"
    blocker.write_text("")
    with pytest.raises(SparsaError, match="cannot create the output folder"):
        run_recipe(load_recipe("gemm_array"), blocker / "run", quiet=True)
    with pytest.raises(SparsaError, match="cannot create the sweep folder"):
        SweepStore(blocker)


def test_negative_refit_samples_names_line_and_field():
    msg = _err("""\
        name: x
        model: minilm
        stages:
          - type: prune
            heads: 0.25
            refit_samples: -5
        """)
    assert "r.yaml:6: stages[0].refit_samples:" in msg and "greater than or equal to 0" in msg


def test_two_stages_of_one_name_are_refused():
    """`--set stages.p.channels=...` would silently change only the first of them."""
    from sparsa.recipe import parse_recipe

    text = ("name: x\nmodel: tiny-cnn\nstages:\n  - {type: prune, channels: 0.3, name: p}\n"
            "  - {type: prune, channels: 0.2, name: p}\n")
    with pytest.raises(SparsaError, match="stage name\\(s\\) 'p' given to more than one stage"):
        parse_recipe(text, source="r.yaml")
    parse_recipe(text.replace("name: p}", "name: q}", 1), source="r.yaml")  # distinct names are fine
