"""The per-CPU choice of integer weight storage and bits (sparsa.quant.kernels), with injected CPU
feature sets: nothing here depends on the ISA of the machine running the tests. Files are only run
where they are exact on every x86 CPU (u8×u8 storage); an int8-stored 8-bit file is checked for its
metadata and for being refused on a CPU without VNNI, never run."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from sparsa.errors import SparsaError
from sparsa.quant import QuantConfig, quantize_
from sparsa.quant.export import export_info, export_onnx, onnx_session
from sparsa.quant.kernels import auto_weight_bits, choose_weight_storage, has_vnni

AVX2 = ["avx2"]
AVX512_NO_VNNI = ["avx2", "avx512f"]  # Skylake-X: u8×s8 still pairs products in int16
ZEN4 = ["avx2", "avx512f", "avx512_vnni"]
ALDER_LAKE = ["avx2", "avx_vnni"]
SAPPHIRE_RAPIDS = ["avx2", "avx512f", "avx512_vnni", "amx_int8", "amx_bf16"]
ARM = ["asimd", "asimddp", "i8mm"]


def _layers(bits, zero_point=None):
    return [SimpleNamespace(bits=b, w_zero_point=zero_point) for b in bits]


@pytest.mark.parametrize("isa, vnni", [(AVX2, False), (AVX512_NO_VNNI, False), (ZEN4, True), (ALDER_LAKE, True),
                                       (SAPPHIRE_RAPIDS, True), (ARM, False), ([], False)])
def test_vnni_is_recognised_by_its_cpuinfo_names(isa, vnni):
    assert has_vnni(isa) is vnni
    assert auto_weight_bits(isa)[0] == (8 if vnni else 7)


@pytest.mark.parametrize("isa", [AVX2, AVX512_NO_VNNI, ZEN4, ARM])
def test_seven_bit_codes_take_the_u8s8_kernels_on_every_cpu(isa):
    assert choose_weight_storage(_layers([7, 6, 7]), "dynamic", isa)[0] == "int8"


def test_eight_bit_codes_take_u8s8_only_where_vnni_makes_them_exact():
    for isa in (ZEN4, ALDER_LAKE, SAPPHIRE_RAPIDS):
        dtype, why = choose_weight_storage(_layers([8, 7]), "dynamic", isa)
        assert dtype == "int8" and "VNNI" in why
    for isa in (AVX2, AVX512_NO_VNNI, ARM, []):
        dtype, why = choose_weight_storage(_layers([8, 7]), "dynamic", isa)
        assert dtype == "uint8" and "saturate" in why


def test_asymmetric_and_static_exports_keep_their_storage_on_any_cpu():
    zp = torch.zeros(4, dtype=torch.uint8)
    for isa in (AVX2, ZEN4):
        assert choose_weight_storage(_layers([8], zero_point=zp), "dynamic", isa)[0] == "uint8"
        assert choose_weight_storage(_layers([8]), "static", isa)[0] == "int8"


def _w8(tiny_bert):
    q = tiny_bert.clone()
    quantize_(q, QuantConfig(bits=8, clip="search", activations="dynamic", act_scheme="asym"))
    return q


def _weights(path):
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer if i.name.endswith("_wq")}


def test_export_stores_8bit_codes_as_int8_for_a_vnni_cpu_and_says_so(tiny_bert, tmp_path):
    q = _w8(tiny_bert)
    p = export_onnx(q, tmp_path / "vnni.onnx", seq_len=12, cpu_isa=ZEN4)
    wq = _weights(p)
    codes = q.model.encoder.layer[0].output.dense.qweight.numpy().T
    assert wq and all(a.dtype == np.int8 for a in wq.values())
    assert np.array_equal(wq["q_encoder_layer_0_output_dense_wq"], codes)  # sparsa's codes, unshifted
    assert np.abs(codes.astype(np.int16)).max() > 63  # really 8-bit: u8×s8 without VNNI would saturate
    info = export_info(p)
    assert (info["weights"], info["cpu_needs"], info["cpu_isa"]) == ("int8", "vnni", ZEN4)
    assert "VNNI" in info["weights_choice"]
    onnx_session(p, threads=1, cpu_isa=ZEN4)  # opens where it is exact
    with pytest.raises(SparsaError, match="VNNI") as e:
        onnx_session(p, threads=1, cpu_isa=AVX2)  # wrong numbers there: refused, not run
    assert "uint8" in e.value.hint


def test_export_keeps_8bit_codes_exact_on_u8u8_for_a_cpu_without_vnni(tiny_bert, tmp_path):
    q = _w8(tiny_bert)
    p = export_onnx(q, tmp_path / "avx2.onnx", seq_len=12, cpu_isa=AVX512_NO_VNNI)
    wq = _weights(p)
    assert wq and all(a.dtype == np.uint8 for a in wq.values())
    info = export_info(p)
    assert (info["weights"], info["cpu_needs"]) == ("uint8", "")
    onnx_session(p, threads=1, cpu_isa=AVX2)  # runs anywhere


def test_caller_overrides_the_choice_and_the_file_records_it(tiny_bert, tmp_path):
    q = _w8(tiny_bert)
    p = export_onnx(q, tmp_path / "u8.onnx", seq_len=12, cpu_isa=ZEN4, weight_dtype="uint8")
    info = export_info(p)
    assert (info["weights"], info["weights_choice"], info["cpu_needs"]) == ("uint8", "set by the caller", "")
    p = export_onnx(q, tmp_path / "s8.onnx", seq_len=12, cpu_isa=AVX2, weight_dtype="int8")
    assert export_info(p)["cpu_needs"] == "vnni"  # forced int8 8-bit codes still say where they are exact


def test_seven_bit_export_needs_no_vnni(tiny_bert, tmp_path):
    q = tiny_bert.clone()
    quantize_(q, QuantConfig(bits=7, clip="search", activations="dynamic", act_scheme="asym"))
    info = export_info(export_onnx(q, tmp_path / "w7.onnx", seq_len=12, cpu_isa=AVX2))
    assert (info["weights"], info["cpu_needs"]) == ("int8", "")


@pytest.mark.parametrize("isa, bits", [(ZEN4, 8), (AVX2, 7)])
def test_auto_bits_follow_the_cpu(tiny_bert, monkeypatch, isa, bits):
    import sparsa.quant.kernels as kernels
    from sparsa.quant import quant_layers, quantize_loaded

    monkeypatch.setattr(kernels, "this_cpu_isa", lambda: list(isa))
    q, rec = quantize_loaded(tiny_bert.clone(), bits="auto", scheme="sym", clip="max")
    assert {m.bits for m in quant_layers(q.model).values()} == {bits}
    assert rec["bits_choice"]["bits"] == bits and rec["bits_choice"]["cpu_isa"] == list(isa)
