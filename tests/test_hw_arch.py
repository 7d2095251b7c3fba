"""Architecture presets: every preset loads; bad fields and impossible machines are rejected by name."""

from __future__ import annotations

import pytest

from sparsa.errors import SparsaError
from sparsa.hw.arch import Arch, list_presets, load_arch

REQUIRED = {"hdp-edge", "hdp-server", "swin-fpga", "escalate", "multicore", "systolic-32-os", "systolic-128-os",
            "systolic-32-ws", "systolic-128-ws"}


def test_all_presets_load_and_round_trip():
    assert REQUIRED <= set(list_presets())
    for name in list_presets():
        a = load_arch(name)
        assert isinstance(a, Arch) and a.name == name
        assert load_arch(a.model_dump()) == a  # dict round trip
        area = a.total_area()
        assert area["total"] == pytest.approx(sum(v for k, v in area.items() if k != "total"))


def test_hdp_presets_are_labelled_placeholders():
    edge, server = load_arch("hdp-edge"), load_arch("hdp-server")
    for a in (edge, server):
        assert a.placeholder and "placeholder" in a.reference.lower()
        assert a.sparsity_engine.present and a.softmax_unit.present
        assert (a.array.pe_rows, a.array.pe_cols) == (2, 4) and a.array.dataflow == "os"
    assert (edge.cores, server.cores) == (1, 8)


def test_swin_fpga_keeps_seed_001_resources():
    a = load_arch("swin-fpga")
    assert a.area.fpga == {"bram": 1402, "dsp": 3267, "lut": 508787, "ff": 682198, "uram": 33}
    assert a.power_w == 41
    assert a.macs <= 2 * a.area.fpga["dsp"]  # two 8-bit MACs per DSP48 (the preset's fitted mapping)


def test_yaml_file_and_overrides(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text(
        "name: mine\nclock_hz: 5.0e8\narray: {rows: 16, cols: 8, dataflow: ws}\n"
        "buffers: {ifmap_kb: 4, filter_kb: 4, ofmap_kb: 2}\ndram: {bandwidth_bytes_per_cycle: 8}\n"
    )
    a = load_arch(str(p))
    assert (a.array.rows, a.array.cols, a.array.dataflow, a.clock_hz) == (16, 8, "ws", 5e8)
    b = load_arch(str(p), **{"dram.bandwidth_bytes_per_cycle": 2.5})
    assert b.dram.bandwidth_bytes_per_cycle == 2.5


def _err(**overrides) -> str:
    with pytest.raises(SparsaError) as e:
        load_arch("systolic-32-os", **overrides)
    return e.value.message


def test_bad_fields_are_named():
    assert "array.rows" in _err(**{"array.rows": 0})
    assert "array.dataflow" in _err(**{"array.dataflow": "diagonal"})
    assert "clock_hz" in _err(clock_hz=-1)
    assert "buffers.ifmap_kb" in _err(**{"buffers.ifmap_kb": "lots"})
    msg = _err(**{"array.colls": 4})
    assert "array.colls" in msg and "Extra inputs" in msg


def test_impossible_machines_rejected_with_reason():
    msg = _err(**{"dram.bandwidth_bytes_per_cycle": 0})
    assert "zero DRAM bandwidth" in msg
    msg = _err(**{"buffers.filter_kb": 0.01})  # 10 bytes < 2 x 32 words
    assert "buffers.filter_kb" in msg and "smaller than one double-buffered tile" in msg
    with pytest.raises(SparsaError) as e:
        load_arch("hdp-edge", **{"array.rows": 3})  # not a whole number of 2x2 blocks
    assert "2x2 blocks" in e.value.message


def test_unknown_preset_and_bad_yaml(tmp_path):
    with pytest.raises(SparsaError) as e:
        load_arch("hdp-galactic")
    assert "hdp-edge" in e.value.hint
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SparsaError, match="malformed YAML"):
        load_arch(str(bad))
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(SparsaError, match="mapping"):
        load_arch(str(lst))
