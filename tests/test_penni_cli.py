"""`sparsa decompose`: end to end on a small saved conv net (a 20-image folder, one epoch), and bad input."""

import json
import subprocess
import sys

import torch
from typer.testing import CliRunner

from sparsa.cli import app
from sparsa.decompose.escalate import EscalateConv
from sparsa.errors import SparsaError
from sparsa.models import from_module, load
from sparsa.models.zoo import TinyCNN


def _sparsa(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sparsa", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_decompose_cli_end_to_end_and_errors(tmp_path):
    torch.manual_seed(0)
    src = tmp_path / "cnn"
    from_module(TinyCNN(width=8)).save(src)
    out = tmp_path / "out"
    from PIL import Image  # a tiny image folder: cheaper to load than the built-in digits (no scikit-learn)

    for c in range(2):
        (tmp_path / "imgs" / f"class{c}").mkdir(parents=True)
        for k in range(10):
            px = (torch.rand(16, 16, 3) * 255).to(torch.uint8).numpy()
            Image.fromarray(px).save(tmp_path / "imgs" / f"class{c}" / f"{k}.png")
    # one cheap run (20 images, one epoch) through every stage: group penalty, channel pruning,
    # shrink, hybrid quantization, save
    r = _sparsa("decompose", str(src), "--out", str(out), "--retrain-epochs", "1", "--finetune-epochs", "0", "--hybrid-epochs", "0",
                "--limit", "32", "--data", str(tmp_path / "imgs"), "--penalty", "group", "--channel-fraction", "0.25", "--s", "1", "--hybrid-quant", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["decomposed"] == ["conv1", "conv2", "conv3", "conv4", "branch_b"]
    assert "1×1" in res["skipped"]["branch_a"]
    assert res["macs_penni"] < res["macs_original"] and 0 < res["coefficient_sparsity"] < 1
    assert res["file_bytes"] < res["bytes_original"]
    assert res["penalty"] == "group" and res["channels_pruned"]["conv2"] == [2, 8]
    back = load(out)
    assert isinstance(back.model.conv2, EscalateConv)
    assert res["shrink"]["conv3"][1][0] == 6 and back.model.conv3.in_channels == 6 == back.model.conv2.out_channels
    assert back.record["stages"][-1]["name"] == "penni"
    x = torch.randn(1, 3, 32, 32)
    assert back.model(x).shape == (1, 10)

    # the exit status and the message of the real entry point ...
    bad = _sparsa("decompose", str(src), "--out", str(tmp_path / "x"), "--method", "tucker")
    assert bad.returncode == 2 and "unknown decomposition method" in bad.stderr and "Traceback" not in bad.stderr
    # ... and further bad input in-process (no second interpreter start)
    for args, message in ((["--basis", "12", "--retrain-epochs", "0", "--limit", "8"], "larger than its kernel volume 9"),
                          (["--penalty", "l0"], "sparsity penalty"), (["--limit", "0"], "--limit"),
                          (["--penalty", "group", "--channel-fraction", "1.5"], "--channel-fraction 1.5 is out of range"),
                          (["--lam", "-1"], "--lam -1.0 is out of range")):
        r = CliRunner().invoke(app, ["decompose", str(src), "--out", str(tmp_path / "x"), *args])
        assert isinstance(r.exception, SparsaError) and message in str(r.exception), (args, r.output)


def test_decompose_vit_keeps_its_patch_conv_and_decomposes_its_linears(tmp_path):
    # HF ViT reads its patch-embedding conv's `.weight`: that conv stays plain (said in the result). Without
    # --linear nothing else is decomposable, which is refused naming --linear; with it the Linears decompose.
    args = ["--limit", "8", "--retrain-epochs", "0", "--finetune-epochs", "0"]
    r = CliRunner().invoke(app, ["decompose", "tiny-vit", "--out", str(tmp_path / "x"), *args])
    assert isinstance(r.exception, SparsaError) and "no layer of this model could be decomposed" in str(r.exception)
    assert "--linear" in r.exception.hint and not (tmp_path / "x").exists()
    r = CliRunner().invoke(app, ["decompose", "tiny-vit", "--out", str(tmp_path / "y"), "--linear", *args, "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    conv = "vit.embeddings.patch_embeddings.projection"
    assert conv not in res["decomposed"] and "reads this layer's weight directly" in res["skipped"][conv]
    assert res["decomposed"] and all("patch_embeddings" not in n for n in res["decomposed"])
    assert res["samples"] == {"train": 8, "calib": 8, "test": 8}
