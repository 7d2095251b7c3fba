"""More bad input that must be a clear SparsaError (exit 2), not a traceback, a silent wrong model or a
runaway allocation: HF folders whose config and weights disagree, and absurd `sparsa sim --batch`."""

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import sparsa.cli  # noqa: F401  registers the command modules
from sparsa.cli.app import app
from sparsa.errors import SparsaError
from sparsa.models import load
from sparsa.models.store import FIXTURES

runner = CliRunner()


def _error(args) -> str:
    r = runner.invoke(app, args)
    assert isinstance(r.exception, SparsaError), (r.output, r.exception)
    return str(r.exception)


def _vit_folder(tmp_path, name, drop=(), extra=None, **config):
    """A save_pretrained-style copy of the tiny-vit fixture with tensors dropped/added and config edited."""
    src = FIXTURES / "tiny-vit"
    d = tmp_path / name
    d.mkdir()
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(config)
    (d / "config.json").write_text(json.dumps(cfg))
    w = {k: v for k, v in load_file(src / "model.safetensors").items() if not k.startswith(drop)}
    save_file({**w, **(extra or {})}, str(d / "model.safetensors"))
    return d


@pytest.mark.parametrize("kind, words", [
    (dict(drop=("classifier.",)), "model.safetensors lacks: classifier.bias, classifier.weight"),
    (dict(num_hidden_layers=6), "model.safetensors lacks"),  # two layers would be random
    (dict(num_hidden_layers=3), "config.json has no place for"),  # a layer would be dropped
])
def test_hf_folder_whose_config_and_weights_disagree_is_refused(tmp_path, kind, words):
    d = _vit_folder(tmp_path, "m", **kind)
    with pytest.raises(SparsaError, match=words):
        load(d)
    shutil.copytree(FIXTURES / "tiny-vit", tmp_path / "ok")
    assert load(tmp_path / "ok").family == "vit"  # the matching pair still loads


def test_stored_head_the_class_lacks_is_left_out_with_a_warning(tmp_path):
    """A checkpoint's tensors under a module the chosen class does not have at all (a pre-training head)
    are not the model's: it loads, saying which were left out. Extra tensors inside its modules refuse."""
    import torch

    d = _vit_folder(tmp_path, "m", extra={"cls.predictions.bias": torch.zeros(4)})
    with pytest.warns(UserWarning, match="cls.predictions.bias"):
        assert load(d).family == "vit"
    d = _vit_folder(tmp_path, "m2", extra={"vit.encoder.layer.0.extra.weight": torch.zeros(4)})
    with pytest.raises(SparsaError, match=r"has no place for: vit\..*extra\.weight"):
        load(d)


def test_sim_batch_past_memory_is_refused_before_allocating():
    msg = _error(["sim", "tiny-vit", "--arch", "systolic-32-os", "--batch", "999999999999999"])
    assert "--batch 999999999999999: the model's inputs alone would take" in msg
    assert "use --batch" in msg


def test_eval_on_more_classes_than_the_model_predicts_is_refused(tmp_path):
    from PIL import Image

    for c in range(11):  # tiny-cnn predicts 10 digits: an 11th class folder could never be right
        (tmp_path / f"c{c:02d}").mkdir()
        for i in range(10):
            Image.new("RGB", (32, 32), 10 * c + i).save(tmp_path / f"c{c:02d}" / f"{i}.png")
    msg = _error(["eval", "tiny-cnn", "--data", str(tmp_path), "--runs", "1"])
    assert "has 11 classes, but the model predicts 10" in msg


def test_rtl_cosim_vector_count_is_bounded_and_range_errors_carry_a_hint():
    r = runner.invoke(app, ["rtl", "cosim", "pe", "--vectors", "99999999999"])  # years of simulation
    assert isinstance(r.exception, SparsaError) and "--vectors 99999999999 is out of range" in r.exception.message
    assert r.exception.hint == "give --vectors in [1, 1000000]"  # every range check says what to give
    assert _error(["rtl", "cosim", "pe", "--vectors", "0"]).startswith("--vectors 0 is out of range")


def test_a_text_file_with_a_runaway_line_is_refused_before_tokenizing(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("A short sentence.\n\n" + "word " * 30_000 + "\n")  # tokenizers split a whole line first
    from sparsa.data import load_dataset

    with pytest.raises(SparsaError, match="t.txt: line 3 is 150,000 characters long"):
        load_dataset(str(f), split="test")
    f.write_text("A short sentence.\n" + "word " * 1000 + "\n")
    assert len(load_dataset(str(f), split="test").texts) == 2


def test_a_full_disk_is_a_clear_error_naming_the_output_folder(tmp_path, monkeypatch):
    """ENOSPC was exit 3, 'internal error ... a bug in sparsa'; the staging folder must still go."""
    import errno
    import os

    from sparsa.io import atomic_write_bytes, staged_folder

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(SparsaError, match="cannot write .*out: no space left on the device") as e:
        with staged_folder(tmp_path / "out") as d:
            atomic_write_bytes(d / "model.safetensors", b"x" * 100)
    assert "--out" in e.value.hint
    assert os.listdir(tmp_path) == []  # nothing half-written, no staging folder left


def test_data_that_is_a_fifo_is_refused_not_listed_as_a_folder(tmp_path):
    import os

    from sparsa.data import load_dataset

    os.mkfifo(tmp_path / "pipe.txt")  # never opened: reading a FIFO with no writer would block
    with pytest.raises(SparsaError, match="is neither a regular file nor a folder"):
        load_dataset(str(tmp_path / "pipe.txt"), split="test")


def test_eval_attention_refuses_a_seq_len_it_would_ignore():
    msg = _error(["eval", "minilm", "--attention", "topk", "--ratio", "0.5", "--seq-len", "8192"])
    assert msg.startswith("--seq-len 8192 sizes the latency measurement")  # was ignored: exit 0, past the 512 limit


def test_small_refusals_say_how_to_fix_them(tmp_path):
    """A negative sparsa.json version, a grid file that is a list, and a --set index past the stage list
    are refused with a hint (the last two had none)."""
    from pathlib import Path

    from sparsa.dse.grid import load_grid
    from sparsa.models.meta_checks import check_sparsa_meta
    from sparsa.recipe import apply_overrides

    with pytest.raises(SparsaError, match="version must be a non-negative integer"):
        check_sparsa_meta({"kind": "hf", "class": "ViTModel", "version": -1}, Path("sparsa.json"))
    check_sparsa_meta({"kind": "hf", "class": "ViTModel", "version": 1}, Path("sparsa.json"))
    g = tmp_path / "grid.yaml"
    g.write_text("- 1\n- 2\n")
    with pytest.raises(SparsaError, match="a grid must be a mapping") as e:
        load_grid(g)
    assert e.value.hint and "params:" in e.value.hint
    with pytest.raises(SparsaError, match="index 5 is outside a list of 1") as e:
        apply_overrides({"stages": [{"type": "prune"}]}, {"stages.5.heads": 0.2})
    assert "0 to 0" in e.value.hint
    assert apply_overrides({"stages": [{"type": "prune"}]}, {"stages.-1.heads": 0.2})["stages"][0]["heads"] == 0.2


@pytest.mark.parametrize("cmd", [["prune", "{m}", "--channels", "0.3"], ["quantize", "{m}", "--bits", "8"]])
def test_out_that_is_or_holds_the_model_folder_is_refused_even_with_overwrite(tmp_path, cmd):
    """--overwrite replaced the model being read (or deleted it with its parent and everything beside it)."""
    m = tmp_path / "work" / "m"
    shutil.copytree(FIXTURES / "tiny-cnn", m)
    (tmp_path / "work" / "notes.txt").write_text("mine")
    args = [a.format(m=m) for a in cmd]
    assert "is the model folder" in _error([*args, "--out", str(m), "--overwrite"])
    assert "holds the model folder" in _error([*args, "--out", str(m.parent), "--overwrite"])
    assert (m / "model.safetensors").is_file() and (tmp_path / "work" / "notes.txt").read_text() == "mine"
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "elsewhere")])
    assert r.exit_code == 0, r.output
