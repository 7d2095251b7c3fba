"""Model loading, family adapters and save -> load round trips for every family."""

import json

import pytest
import torch

from sparsa.errors import SparsaError
from sparsa.models import load
from sparsa.models.tiny import tiny_model
from sparsa.prune import PrunePlan, prune

FAMILIES = ["bert", "vit", "swin", "videomae", "conv", "video-conv", "roberta", "electra", "distilbert", "deit"]


def _out(lm, x):
    with torch.no_grad():
        y = lm.model(**x)
    return getattr(y, "logits", None) if hasattr(y, "logits") else getattr(y, "last_hidden_state", y)


@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_same_outputs(family, tmp_path):
    lm = tiny_model(family)
    x = lm.example_inputs(batch=2, seq_len=16)
    plan = PrunePlan(heads=0.5, ffn=0.5, channels=0.5 if family in ("conv", "video-conv") else 0.0)
    if family == "conv":
        plan = PrunePlan(channels=0.5)
    for m in (lm, prune(lm, plan)):
        d = m.save(tmp_path / f"m{id(m)}")
        back = load(d)
        assert back.family == m.family
        assert back.describe() == m.describe()
        assert torch.equal(_out(back, x), _out(m, x))
        assert back.record == json.loads(json.dumps(m.record))


def test_adapter_finds_units():
    lm = tiny_model("swin")
    heads = lm.adapter.head_groups()
    assert [g.num_heads for g in heads] == [2, 4]
    assert all(g.per_head for g in heads)  # the relative-position-bias table goes with the heads
    assert [g.size for g in lm.adapter.ffn_groups()] == [64, 128]
    cnn = tiny_model("conv")
    names = {g.name: g for g in cnn.adapter.channel_groups()}
    # the residual add couples conv1 and conv3; the concat feeds fc1 through a flatten (16 columns per channel)
    assert set(names["conv1"].producers) == {"conv1", "conv3"}
    assert {(c.path, c.offset, c.stride) for c in names["branch_b"].consumers} == {("fc1", 8 * 16, 16)}
    assert "fc2" not in names  # the classifier output is never pruned


def test_minilm_builtin(tmp_path):
    lm = load("minilm")
    assert lm.family == "bert" and lm.tokenizer is not None and lm.modality == "text"
    d = lm.describe()
    assert d["heads_per_layer"] == [12] * 6 and d["ffn_per_layer"] == [1536] * 6
    small = prune(lm, PrunePlan(heads=0.5, ffn=0.5))
    out = small.save(tmp_path / "minilm50")
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["sparsa_heads_per_layer"] == [6] * 6 and cfg["sparsa_ffn_per_layer"] == [768] * 6
    back = load(out)
    x = lm.example_inputs(batch=1, seq_len=24)
    assert torch.equal(_out(back, x), _out(small, x))
    assert back.record["source"] == "minilm"
    assert back.model.encoder.layer[0].attention.self.query.out_features == 192


def test_bad_names_and_folders(tmp_path):
    with pytest.raises(SparsaError, match="no model named"):
        load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SparsaError, match="not a model folder"):
        load(tmp_path / "empty")
    unk = tmp_path / "gpt"
    unk.mkdir()
    (unk / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(SparsaError, match="supported families: .*bert.*conv") as e:
        load(unk)
    assert "register_family" in e.value.hint


def test_corrupt_and_pickle_folders(tmp_path):
    lm = tiny_model("vit")
    d = lm.save(tmp_path / "vit")
    (d / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(SparsaError, match="corrupt"):
        load(d)
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(SparsaError, match="never loads pickled"):
        load(d)
    (d / "sparsa.json").write_text("{not json")
    with pytest.raises(SparsaError, match="corrupt"):
        load(d)
    (d / "sparsa.json").write_text("[1, 2]")  # valid JSON, not a sparsa record
    with pytest.raises(SparsaError, match="expected a JSON object"):
        load(d)
    (d / "sparsa.json").unlink()
    (d / "config.json").write_text("[]")
    with pytest.raises(SparsaError, match="expected a JSON object"):
        load(d)


def test_refuses_foreign_classes(tmp_path):
    lm = tiny_model("conv")
    d = lm.save(tmp_path / "cnn")
    meta = json.loads((d / "sparsa.json").read_text())
    meta["class"] = "subprocess.Popen"
    (d / "sparsa.json").write_text(json.dumps(meta))
    with pytest.raises(SparsaError, match="refusing to build 'subprocess.Popen'") as e:
        load(d)
    assert "known: sparsa.models.zoo.TinyCNN, sparsa.models.zoo.TinyVideoNet" in e.value.message
    assert "register_module_class" in e.value.hint


def test_text_inputs_respect_the_position_limit():
    bert, roberta = tiny_model("bert"), tiny_model("roberta")  # 64 positions; RoBERTa's start after padding_idx
    assert bert.example_inputs()["input_ids"].shape == (1, 64)  # default 128, capped at the model's limit
    assert roberta.example_inputs()["input_ids"].shape == (1, 68)
    assert bert.example_inputs(seq_len=12)["input_ids"].shape == (1, 12)
    with pytest.raises(SparsaError, match="longer than this model's 64 positions") as e:
        bert.example_inputs(seq_len=100)
    assert "--seq-len 64" in e.value.hint
    with torch.no_grad():  # the capped length runs
        roberta.model(**roberta.example_inputs(batch=2))
