"""sparsa.io: atomic outputs replace whole files, leave no temporary behind, and are world-readable like open()."""

import json
import os
import stat

import pytest
import torch

from sparsa.io import atomic_save_safetensors, atomic_write_bytes, atomic_write_json


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "sub" / "r.json"
    atomic_write_json(p, {"a": 1})
    atomic_write_json(p, {"a": torch.tensor(2), "p": tmp_path})
    assert json.loads(p.read_text()) == {"a": 2, "p": str(tmp_path)}
    assert os.listdir(p.parent) == ["r.json"]


def test_atomic_write_mode_follows_umask(tmp_path):
    old = os.umask(0o022)
    os.umask(old)
    p = atomic_write_bytes(tmp_path / "x.bin", b"abc")
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~old  # not mkstemp's private 0600


def test_failed_write_keeps_the_old_file(tmp_path):
    p = tmp_path / "r.json"
    atomic_write_json(p, {"ok": True})
    with pytest.raises(TypeError):
        atomic_write_json(p, {"bad": object()})
    assert json.loads(p.read_text()) == {"ok": True} and os.listdir(tmp_path) == ["r.json"]


def test_safetensors_round_trip(tmp_path):
    from safetensors.torch import load_file

    t = {"w": torch.arange(6.0).reshape(2, 3).t()}  # non-contiguous input is saved as its values
    atomic_save_safetensors(tmp_path / "m.safetensors", t)
    assert torch.equal(load_file(tmp_path / "m.safetensors")["w"], t["w"])
