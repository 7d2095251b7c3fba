"""RTL tooling: parameters and errors, Verilog export, CLI, Verilator co-simulation, Yosys synthesis."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sparsa.errors import SparsaError
from sparsa.hw import rtl
from sparsa.hw.rtl.params import load_params


def test_params_from_presets_and_errors():
    p = load_params("seed000")
    assert (p.cores, p.lane_in_bits, p.lane_out_bits, p.lane_kind) == (4, 8, 16, "seed")
    assert load_params("array32").pe_rows == 16  # 32x32 output tile = 16x16 PEs of 2x2 blocks
    # the simulator's presets size the RTL: its MAC grid becomes PEs of 2x2 blocks
    server = load_params("hdp-server")
    assert (server.cores, server.pe_rows, server.pe_cols, server.lane_kind) == (8, 2, 4, "pe")
    assert load_params("systolic-32-os").pe_rows == 16
    assert load_params(head_dim=64).acc_bits == 2 * 8 + 6  # docs/algorithms.md §1.1: 2*n_b + ceil(log2 D_h)
    with pytest.raises(SparsaError, match="unknown preset"):
        load_params("no-such-preset")
    with pytest.raises(SparsaError, match="2..16 bits"):
        load_params(total_bits=40)
    with pytest.raises(SparsaError, match="does not fit"):
        load_params(frac_bits=8)
    with pytest.raises(SparsaError, match="lane widths"):
        load_params(lane_in_bits=32, lane_out_bits=16)
    with pytest.raises(SparsaError, match="unknown RTL unit"):
        rtl.cosim("fpu", 10)


def test_export_verilog(tmp_path):
    path = rtl.export_verilog("ncore", "seed000", tmp_path)
    text = path.read_text()
    assert "module sparsa_ncore" in text and "rst_n" in text
    assert "data_in_3" in text and "result_out_3" in text


def test_cli_cosim_json_and_errors(tmp_path):
    from sparsa.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["rtl", "cosim", "ncore", "--vectors", "40", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["bit_exact"] and out["vectors"] == 40
    r = runner.invoke(app, ["rtl", "export", "pe", "--preset", "hdp-edge", "--out", str(tmp_path), "--json"])
    assert r.exit_code == 0 and (tmp_path / "sparsa_pe.v").exists()
    for args, msg in [
        (["rtl", "cosim", "fpu"], "unknown RTL unit"),
        (["rtl", "synth", "pe", "--preset", "nope"], "unknown preset"),
        (["rtl", "cosim", "pe", "--param", "total_bits=40"], "2..16 bits"),
        (["rtl", "cosim", "pe", "--param", "colour=red"], "unknown RTL parameter"),
    ]:
        r = runner.invoke(app, args)
        assert r.exit_code != 0
        assert isinstance(r.exception, SparsaError) and msg in r.exception.message


def test_verilator_cosim():
    from sparsa.hw.rtl.verilator import INSTALL_HINT, verilator_path

    if verilator_path() is None:
        pytest.skip(f"Verilator not installed: {INSTALL_HINT}")
    res = rtl.cosim("pe", 500, backend="verilator", seed=5, head_dim=8)
    assert res.vectors == 500 and res.mismatches == 0
    # the same trace through the Python simulator gives the same outputs
    assert rtl.cosim("pe", 500, seed=5, head_dim=8).checked_outputs == res.checked_outputs


def test_synth_counts_grow_with_array_size():
    from sparsa.hw.rtl.synth import INSTALL_HINT, yosys_command

    if yosys_command() is None:
        pytest.skip(f"no Yosys: {INSTALL_HINT}")
    tiny = dict(total_bits=4, frac_bits=2, head_dim=2, flow="generic")
    one = rtl.synthesize("pe_array", pe_rows=1, pe_cols=1, **tiny)
    two = rtl.synthesize("pe_array", pe_rows=1, pe_cols=2, **tiny)
    assert one["counts"]["ff"] > 0 and one["counts"]["gates"] > 0
    assert two["counts"]["ff"] > one["counts"]["ff"]
    assert two["counts"]["gates"] > one["counts"]["gates"]
