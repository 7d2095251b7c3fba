"""Bad and hostile input gets a clear SparsaError (or correct output), never a traceback, hang or runaway memory:
unreadable images, mismatched references, oversized configs and sparsa.json shapes, mistyped sparsa.json
fields, YAML alias bombs, non-finite metrics under --json, and out-of-range numeric options."""

import json
import math
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import sparsa.cli  # noqa: F401  registers the command modules
from sparsa.cli.app import app
from sparsa.errors import SparsaError
from sparsa.models import bounds, load
from sparsa.models.store import FIXTURES

runner = CliRunner()


def _error(args) -> str:
    r = runner.invoke(app, args)
    assert isinstance(r.exception, SparsaError), (r.output, r.exception)
    return str(r.exception)


# ---------------------------------------------------------------- data


def test_unreadable_image_names_the_file(tmp_path):
    from PIL import Image

    from sparsa.data import load_dataset

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(10):
            Image.fromarray(np.full((8, 8, 3), 20 * i, np.uint8)).save(tmp_path / c / f"{i}.png")
    (tmp_path / "a" / "9.png").write_bytes(b"not an image at all")
    with pytest.raises(SparsaError, match=r"cannot be read as images: .*9\.png \(UnidentifiedImageError\)") as e:
        for split in ("train", "test", "calib"):  # the broken file is in one of the splits
            load_dataset(tmp_path, split)
    assert "remove or replace" in e.value.hint


# ---------------------------------------------------------------- references


def test_reference_of_another_modality_is_refused():
    from sparsa.cli.model_cmds import check_reference

    swin = SimpleNamespace(modality="image", family="swin")
    minilm = SimpleNamespace(modality="text", family="bert")
    with pytest.raises(SparsaError, match=r"reference 'minilm' \(bert\) takes text input, but .* \(swin\) takes image"):
        check_reference(swin, "tiny-swin", minilm, "minilm")
    # through the CLI: an image model against a video model fails before any data is loaded
    msg = _error(["eval", "tiny-vit", "--reference", "tiny-videomae", "--runs", "1"])
    assert "takes video input" in msg and "takes image input" in msg


# ---------------------------------------------------------------- model folders: sizes


@pytest.fixture
def eight_gb_machine(monkeypatch):
    """The size checks judge against this machine's memory: pin it, so the outcome does not depend on the host."""
    monkeypatch.setattr(bounds, "machine_memory_bytes", lambda: 8 << 30)


def _copy(src, dst, edit, name):
    shutil.copytree(src, dst)
    obj = json.loads((dst / name).read_text())
    edit(obj)
    (dst / name).write_text(json.dumps(obj))
    return dst


def test_swin_depth_bomb_is_refused_before_building(tmp_path):
    folder = _copy(FIXTURES / "tiny-swin", tmp_path / "m", lambda c: c.update(depths=[1_000_000_000, 2]), "config.json")
    with pytest.raises(SparsaError, match=r"depths declares 1000000002 layers"):
        load(folder)
    # the CLI path the issue measured
    assert "depths declares" in _error(["info", str(folder)])


def test_huge_config_is_refused_with_an_estimate(tmp_path, eight_gb_machine):
    folder = _copy(FIXTURES / "tiny-vit", tmp_path / "m", lambda c: c.update(hidden_size=4_000_000, intermediate_size=8),
                   "config.json")
    with pytest.raises(SparsaError, match=r"model of (more than )?[\d.e+]+ GB.*this machine can hold about 6\.87 GB"):
        load(folder)


@pytest.fixture(scope="module")
def cnn_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cnn") / "m"
    load("tiny-cnn").save(folder)
    return folder


def _first_conv(meta):
    return next(k for k, v in meta["shapes"].items() if v["type"] == "Conv2d")


def test_sparsa_json_huge_channels_refused_with_estimate(cnn_folder, tmp_path, eight_gb_machine):
    def edit(m):
        m["shapes"][_first_conv(m)]["out_channels"] = 100_000_000  # 10^8 x 3 x 3 x 3 floats: 10.8 GB

    folder = _copy(cnn_folder, tmp_path / "m", edit, "sparsa.json")
    # refused while the skeleton is built (past the budget) or once it is (twice its size does not fit)
    with pytest.raises(SparsaError, match=r"model of (more than )?10\.\d GB.*this machine can hold about 6\.87 GB"):
        load(folder)


def test_sparsa_json_shapes_must_match_the_weights(cnn_folder, tmp_path):
    def edit(m):
        m["shapes"][_first_conv(m)]["out_channels"] += 1

    folder = _copy(cnn_folder, tmp_path / "m", edit, "sparsa.json")
    with pytest.raises(SparsaError, match=r"sparsa\.json builds conv1\.weight as \[(\d+), 3, 3, 3\], but "
                                          r"model\.safetensors holds \[(\d+), 3, 3, 3\]") as e:
        load(folder)
    import re

    built, held = map(int, re.search(r"as \[(\d+),.*holds \[(\d+),", e.value.message).groups())
    assert built == held + 1


# ---------------------------------------------------------------- model folders: field types


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["init_kwargs"].update(width="16"),
     r"sparsa\.json: init_kwargs\.width must be an integer \(argument of TinyCNN\), got '16' \(str\)"),
    (lambda m: m["init_kwargs"].update(depth=3), r"init_kwargs\.depth is not an argument of TinyCNN"),
    (lambda m: m.update(attrs={"": {"": 3}}), r"an attribute name in attrs\[''\] must be a Python identifier, got ''"),
    (lambda m: m.update(attrs={"": {"num_heads": 3}}), r"attrs\[''\]\.num_heads: TinyCNN has no attribute 'num_heads'"),
    (lambda m: m.update(shapes={"no.such": {"type": "Linear"}}), r"shapes names module 'no\.such'"),
    (lambda m: m.update(params="x"), r"params must be a JSON object, got 'x'"),
    (lambda m: m.update(tied={"a": "nowhere"}), r"tied\['a'\] names 'nowhere', which model\.safetensors lacks"),
    (lambda m: m.update(kind="pickle"), r'kind must be "hf" or "module"'),
])
def test_sparsa_json_fields_are_named(cnn_folder, tmp_path, edit, message):
    folder = _copy(cnn_folder, tmp_path / "m", edit, "sparsa.json")
    with pytest.raises(SparsaError, match=message) as e:
        load(folder)
    assert str(folder / "sparsa.json") in e.value.message


def test_loading_still_builds_only_allowed_classes(cnn_folder, tmp_path):
    folder = _copy(cnn_folder, tmp_path / "m", lambda m: m.update({"class": "os.system"}), "sparsa.json")
    with pytest.raises(SparsaError, match="refusing to build 'os.system'"):
        load(folder)


# ---------------------------------------------------------------- YAML


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{k}: &{k} [{', '.join([f'*{p}'] * 9)}]\n" for p, k in zip("abcdefgh", "bcdefghi")
) + "name: bomb\nmodel: minilm\n"


def test_yaml_alias_bomb_is_refused(tmp_path):
    from sparsa.recipe import parse_recipe

    with pytest.raises(SparsaError, match=r"r\.yaml: YAML aliases expand the document from \d+ to 4\d{8} values"):
        parse_recipe(BOMB, source="r.yaml")
    (tmp_path / "bomb.yaml").write_text(BOMB)
    assert "aliases expand" in _error(["run", str(tmp_path / "bomb.yaml"), "--no-html"])
    # a few ordinary anchors are fine
    ok = parse_recipe("name: x\nmodel: minilm\ndata: &d {seed: 1}\nevaluation: {seq_len: 16}\n", source="ok.yaml")
    assert ok.recipe.data.seed == 1


def test_every_yaml_reader_refuses_aliases_and_oversized_files(tmp_path):
    from sparsa.dse import load_grid
    from sparsa.hw.arch import load_arch
    from sparsa.safe_yaml import MAX_YAML_BYTES

    (tmp_path / "b.yaml").write_text(BOMB)
    for reader in (load_grid, load_arch):
        with pytest.raises(SparsaError, match="aliases expand"):
            reader(tmp_path / "b.yaml")
    (tmp_path / "cycle.yaml").write_text("a: &a [1, *a]\n")
    with pytest.raises(SparsaError, match="cycle"):
        load_grid(tmp_path / "cycle.yaml")
    (tmp_path / "big.yaml").write_text("#" * (MAX_YAML_BYTES + 1))
    with pytest.raises(SparsaError, match=r"is \d+ bytes; sparsa reads YAML files up to"):
        load_arch(tmp_path / "big.yaml")


def test_cli_errors_print_capped(tmp_path, monkeypatch, capsys):
    from sparsa.cli import MAX_MESSAGE_CHARS, main

    recipe = tmp_path / "long.yaml"
    recipe.write_text("name: x\nmodel: " + "a" * 100_000 + "\n")  # a name too long for any file system
    monkeypatch.setattr("sys.argv", ["sparsa", "run", str(recipe)])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "more characters)" in err
    assert len(err) < MAX_MESSAGE_CHARS + 1000


# ---------------------------------------------------------------- NaN output


def test_nan_weights_give_valid_json_and_a_warning(cnn_folder, tmp_path):
    lm = load(cnn_folder)
    # the classifier's weights only: NaN through every conv takes the CPU's slow path
    head = [n for n, m in lm.model.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        lm.model.get_submodule(head).weight[0, 0] = float("nan")
    lm.save(tmp_path / "nan")
    r = runner.invoke(app, ["eval", str(tmp_path / "nan"), "--json", "--runs", "1"])
    assert r.exit_code == 0, (r.output, r.exception)
    line = r.stdout.strip().splitlines()[-1]
    out = json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert out["logit_mse"] is None and "logit_mse" in out["nonfinite"]
    assert out["nonfinite_weights"] == [f"the model: {head}.weight"]
    assert "NaN or infinite weights" in r.stderr and "not finite" in r.stderr


def test_emit_sanitises_nested_non_finite_values(capsys):
    from sparsa.cli.app import emit

    emit({"a": math.inf, "b": {"c": [1.0, np.float32("nan")]}, "d": 2}, True)
    out = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert out == {"a": None, "b": {"c": [1.0, None]}, "d": 2, "nonfinite": ["a", "b.c[1]"]}


# ---------------------------------------------------------------- numeric options


@pytest.mark.parametrize("args, message", [
    (["eval", "tiny-cnn", "--seq-len", "-3"], "--seq-len -3 is out of range: it must be at least 1"),
    (["info", "tiny-cnn", "--seq-len", "0"], "--seq-len 0 is out of range"),
    (["eval", "tiny-cnn", "--runs", "0"], "--runs 0 is out of range"),
    (["eval", "tiny-cnn", "--threads", "-1"], "--threads -1 is out of range"),
    (["eval", "tiny-cnn", "--attention", "hdp", "--tau-h", "nan"], "--tau-h nan is not a finite number"),
    (["eval", "tiny-cnn", "--attention", "hdp", "--rho-b", "inf"], "--rho-b inf is not a finite number"),
    (["eval", "tiny-cnn", "--attention", "topk", "--sparsity", "1"], "--sparsity 1.0 is out of range"),
    (["eval", "tiny-cnn", "--attention", "hdp", "--block", "0"], "--block 0 is out of range"),
    (["eval", "tiny-cnn", "--attention", "hdp", "--importance", "loud"], "--importance: Input should be"),
    (["eval", "tiny-cnn", "--gap", "3"], "--gap is an option of a dynamic attention method"),
    (["sim", "tiny-cnn", "--arch", "hdp-edge", "--attention", "hdp", "--opt", "gapp=3"],
     "--opt gapp: not an option of the attention methods"),
    (["sim", "tiny-cnn", "--arch", "hdp-edge", "--attention", "topk", "--opt", "ratio=2"],
     "--opt ratio: Input should be less than 1"),
    (["decompose", "tiny-cnn", "--tolerance", "2", "--out", "X"], "--tolerance 2.0 is out of range"),
    (["quantize", "tiny-cnn", "--calib-samples", "-5", "--out", "X"], "--calib-samples -5 is out of range"),
    (["quantize", "tiny-cnn", "--smooth", "nan", "--out", "X"], "--smooth nan is not a finite number"),
    (["prune", "tiny-cnn", "--channels", "nan", "--out", "X"], "--channels nan is not a finite number"),
    (["prune", "tiny-cnn", "--channels", "0.5", "--seed", "-1", "--out", "X"], "--seed -1 is out of range"),
    (["prune", "tiny-cnn", "--tolerance", "inf", "--data", "digits", "--out", "X"], "--tolerance inf"),
    (["prune", "tiny-cnn", "--tolerance", "0.02", "--data", "digits", "--seq-len", "16", "--out", "X"],
     "--seq-len sets the text length the one-shot mode counts MACs at"),
    (["prune", "minilm", "--ffn", "0.5", "--seq-len", "0", "--out", "X"], "--seq-len 0"),
    (["decompose", "tiny-cnn", "--lam", "nan", "--out", "X"], "--lam nan is not a finite number"),
    (["decompose", "tiny-cnn", "--epochs", "-1", "--out", "X"], "--retrain-epochs -1 is out of range"),
    (["decompose", "tiny-cnn", "--limit", "0", "--out", "X"], "--limit 0 is out of range"),
    (["decompose", "tiny-cnn", "--s", "-0.5", "--out", "X"], "--s -0.5 is out of range"),
    (["decompose", "tiny-cnn", "--channel-fraction", "1", "--out", "X"], "--channel-fraction 1.0 is out of range"),
    (["train", "tiny-cnn", "--epochs", "-2", "--out", "X"], "--epochs -2 is out of range"),
])
def test_numeric_options_are_range_checked(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written, but if it were, not into the repo
    assert message in _error(args)
    assert not (tmp_path / "X").exists()


@pytest.mark.parametrize("pattern, message", [
    ("[", r"--keep-float '\[' is not a valid pattern: '\[' at position 0 is never closed"),
    ("fc9*", r"--keep-float 'fc9\*' matches none of the model's \d+ Linear layers"),
])
def test_keep_float_patterns_must_be_valid_and_match(pattern, message, tmp_path):
    with pytest.raises(SparsaError, match=message):
        raise SparsaError(_error(["quantize", "tiny-cnn", "--keep-float", pattern, "--out", str(tmp_path / "q")]))


def test_recipe_numbers_refuse_nan_inf_and_negative_seeds():
    from sparsa.recipe import parse_recipe

    base = "name: x\nmodel: minilm\n"
    for text, where in [
        (base + "stages: [{type: prune, heads: .nan}]\n", "stages[0].heads: Input should be a finite number"),
        (base + "stages: [{type: attention, tau_h: .inf}]\n", "stages[0].tau_h: Input should be a finite number"),
        (base + "seed: -1\n", "seed: Input should be greater than or equal to 0"),
        (base + "stages: [{type: quantize, smooth: .nan}]\n", "stages[0].smooth: Input should be a finite number"),
    ]:
        with pytest.raises(SparsaError, match=re_escape(where)):
            parse_recipe(text, source="r.yaml")


def re_escape(s: str) -> str:
    import re

    return re.escape(s)
