"""Data comes at the model's input size (image size, channels, frames, tubelet, normalisation), through
the CLI and the API; --image-size / --frames override it and are validated."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import sparsa.cli  # noqa: F401  registers the command modules
from sparsa.cli.app import app
from sparsa.data import load_dataset
from sparsa.data.model_input import check_format
from sparsa.errors import SparsaError

runner = CliRunner()


def _json(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _fails(args, *needles):
    r = runner.invoke(app, args)  # the app itself (not main()): usage errors exit 2, SparsaError propagates
    err = r.exception
    assert r.exit_code == 2 or isinstance(err, SparsaError), (r.output, err)
    text = " ".join((r.output + (f" {err.message} {err.hint}" if isinstance(err, SparsaError) else "")).split())
    for n in needles:
        assert n in text, text
    return text


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Tiny HF classifiers whose inputs are not the 32 px / 8 frames the built-in fixtures take."""
    import transformers as tf

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    models = {
        "vit48": tf.ViTForImageClassification(tf.ViTConfig(
            image_size=48, patch_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, num_labels=10)),
        "swin48": tf.SwinForImageClassification(tf.SwinConfig(
            image_size=48, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 4], window_size=4, num_labels=10)),
        "vmae48": tf.VideoMAEForVideoClassification(tf.VideoMAEConfig(
            image_size=48, patch_size=16, num_frames=6, tubelet_size=3, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=64, num_labels=6)),
    }
    for name, m in models.items():
        m.save_pretrained(str(root / name))
    return root


@pytest.mark.parametrize("name, shape", [("vit48", [3, 48, 48]), ("swin48", [3, 48, 48]), ("vmae48", [6, 3, 48, 48])])
def test_eval_pruned_against_reference_at_model_size(folders, tmp_path, name, shape):
    dense, pruned = folders / name, tmp_path / "pruned"
    _json(runner.invoke(app, ["prune", str(dense), "--heads", "0.25", "--out", str(pruned), "--json"]))
    r = _json(runner.invoke(app, ["eval", str(pruned), "--reference", str(dense), "--runs", "1", "--json"]))
    assert r["data_shape"] == shape  # before: "the data's samples have shape (3, 32, 32) ..."
    assert 0.0 <= r["top1_agreement"] <= 1.0 and r["reference_accuracy"] >= 0.0


def test_eval_hdp_at_model_size(folders):
    r = _json(runner.invoke(app, ["eval", str(folders / "vmae48"), "--attention", "hdp", "--json"]))
    assert r["n_samples"] == 120 and 0.0 <= r["attention_sparsity"] <= 1.0


def test_image_size_override_reaches_the_data(folders):
    # Swin pads to its windows, so it takes other sizes: the override is what the data comes at
    r = _json(runner.invoke(app, ["eval", str(folders / "swin48"), "--image-size", "32", "--runs", "1", "--json"]))
    assert r["data_shape"] == [3, 32, 32]
    # ... and what its MACs and latency are counted at (the reference's too): fewer MACs than at 48 px
    assert r["latency_input"] == "pixel_values [1, 3, 32, 32]"
    native = _json(runner.invoke(app, ["eval", str(folders / "swin48"), "--runs", "1", "--json"]))
    assert native["latency_input"] == "pixel_values [1, 3, 48, 48]"
    assert r["macs"] == r["reference_macs"] < native["macs"]
    # ViT does not: the mismatch is a clear error naming the option
    _fails(["eval", str(folders / "vit48"), "--image-size", "64", "--runs", "1"],
           "(3, 64, 64) but the model takes (3, 48, 48)", "--image-size")


@pytest.mark.parametrize("args, needle", [
    (["--image-size", "0"], "--image-size 0 is out of range"),
    (["--image-size", "5000"], "--image-size 5000 is out of range"),
    (["--frames", "0"], "--frames 0 is out of range"),
    (["--frames", "7"], "not a whole number of the model's 3-frame tubelets"),
])
def test_data_size_options_are_validated(folders, args, needle):
    _fails(["eval", str(folders / "vmae48"), *args], needle)


def test_frames_on_an_image_model_and_sizes_on_a_text_model_are_refused(folders, tmp_path):
    from sparsa.models.tiny import tiny_model

    _fails(["eval", str(folders / "vit48"), "--frames", "4"], "--frames sizes video clips")
    tiny_model("bert").save(tmp_path / "bert")
    _fails(["quantize", str(tmp_path / "bert"), "--image-size", "32", "--out", str(tmp_path / "q")], "text model")


def test_model_options_drive_every_loader(folders, tmp_path):
    from PIL import Image

    from sparsa.models import load
    from sparsa.models.tiny import tiny_model

    vmae = load(folders / "vmae48")
    assert vmae.data_options() == {"image_size": [48, 48], "channels": 3, "frames": 6, "tubelet": 3}
    clips = load_dataset("clips", "calib", model=vmae)
    assert tuple(clips.x.shape[1:]) == (6, 3, 48, 48) and clips.info["frames"] == 6
    # a Conv3d net takes [C, T, H, W] per clip: its input_shape says so
    conv = tiny_model("video-conv")
    assert tuple(load_dataset("clips", "calib", model=conv).x.shape[1:]) == tuple(conv.model.input_shape)
    # a folder of images of other sizes: resized to the model's, and the info says from what
    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.full((30, 40, 3), 20 * i, np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    ds = load_dataset(tmp_path / "imgs", "test", model=load(folders / "vit48"))
    assert tuple(ds.x.shape[1:]) == (3, 48, 48) and ds.info["resized_from"] == [[30, 40]]
    # the caller's options win over the model's
    assert load_dataset("digits", "calib", model=vmae, image_size=16).x.shape[-1] == 16


def test_preprocessor_normalisation_is_used_and_kept_by_pruned_copies(folders, tmp_path):
    import shutil

    from sparsa.models import load

    src = tmp_path / "vit"
    shutil.copytree(folders / "vit48", src)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    (src / "preprocessor_config.json").write_text(json.dumps({"image_mean": mean, "image_std": std}))
    lm = load(src)
    x = load_dataset("digits", "calib", model=lm).x
    # digit backgrounds are exactly 0: per channel they read (0 - mean) / std
    for c in range(3):
        assert float(x[:, c].min()) == pytest.approx(-mean[c] / std[c], abs=1e-6)
    _json(runner.invoke(app, ["prune", str(src), "--heads", "0.25", "--out", str(tmp_path / "p"), "--json"]))
    assert load(tmp_path / "p").data_options()["mean"] == mean  # kept in the record, no processor file needed


@pytest.mark.parametrize("opts, needle", [
    ({"image_size": 0}, "image_size must be an integer from 1 to 1024"),
    ({"image_size": True}, "image_size must be an integer"),
    ({"image_size": (8, 8, 8)}, "image_size must be N or (height, width)"),
    ({"channels": 4}, "4-channel images"),
    ({"mean": [0.5, 0.5]}, "one number or 3"),
    ({"std": 0.0}, "std must be positive"),
    ({"frames": 5, "tubelet": 2}, "tubelet"),
])
def test_format_errors(opts, needle):
    with pytest.raises(SparsaError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        check_format(**opts)


def test_a_split_too_big_for_memory_is_refused_before_work():
    with pytest.raises(SparsaError, match="GiB") as e:
        load_dataset("mnist", "test", image_size=1024)  # 1,000 x 3 x 1024² float32 = 11.7 GiB
    assert "--image-size" in e.value.hint


def test_one_channel_models_get_grey_data():
    x = load_dataset("digits", "calib", channels=1, image_size=(8, 12)).x
    assert tuple(x.shape[1:]) == (1, 8, 12)


def test_clips_at_another_size_and_length_show_the_same_motion():
    from sparsa.data.video import CLASSES

    d = load_dataset("clips", "calib", frames=12, image_size=64)
    assert tuple(d.x.shape[1:]) == (12, 3, 64, 64)
    x = (d.x * 0.5 + 0.5).mean(2)  # [N, T, H, W] in [0, 1]
    w = (x - x.mean((2, 3), keepdim=True)).clamp(min=0)  # the shape's mass above the background
    cx = (w * torch.arange(64.0)).sum((2, 3)) / w.sum((2, 3))
    shift = {name: float((cx[d.y == c, -1] - cx[d.y == c, 0]).mean()) for c, name in enumerate(CLASSES)}
    # at 32 px / 8 frames a shape travels 1.5-2.8 px a frame, 10-20 px in all; scaled x2 here
    assert 20 < shift["right"] < 40 and -40 < shift["left"] < -20 and abs(shift["down"]) < 3


def test_example_inputs_follow_the_override_in_either_clip_layout(folders):
    from sparsa.models import load
    from sparsa.models.tiny import tiny_model

    conv = tiny_model("video-conv")  # a Conv3d net: [C, T, H, W] per clip
    c, t, h, _ = conv.model.input_shape
    conv.data_size = {"image_size": h * 2, "frames": t * 2}
    (x,) = conv.example_inputs(batch=1).values()
    assert tuple(x.shape) == (1, c, t * 2, h * 2, h * 2)  # frames on the time axis, not the channels
    vmae = load(folders / "vmae48")  # Hugging Face clips: [T, C, H, W]
    vmae.data_size = {"image_size": 32, "frames": 3}
    assert tuple(vmae.example_inputs(batch=2)["pixel_values"].shape) == (2, 3, 3, 32, 32)
    vmae.data_size = {}
    assert tuple(vmae.example_inputs(batch=1)["pixel_values"].shape) == (1, 6, 3, 48, 48)
