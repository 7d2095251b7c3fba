"""Which integer weight codes ONNX Runtime's x86 CPU kernels multiply exactly, chosen per CPU.

MLAS multiplies dynamic u8 activations by s8 weights in one of two ways:
- AVX2 (and AVX-512 without VNNI): vpmaddubsw adds pairs of u8·s8 products in int16, which saturates
  for 8-bit codes (2·255·127 > 32767) but not for 7-bit ones (2·255·63 = 32130);
- VNNI (AVX-512 VNNI, AVX-VNNI; AMX CPUs have it too): vpdpbusd adds the products straight into int32,
  exact for any 8-bit codes, at the same speed as 7-bit ones.
So on a VNNI CPU 8-bit codes stored int8 are as fast as 7-bit and more exact, while elsewhere they need
the exact but slower u8×u8 storage (or 7-bit codes). The choice is made for a set of CPU features (by
default this CPU's, `sparsa.metrics.cpu.cpu_info`) and written into the exported file, which then
refuses to open through `onnx_session` on a CPU that would saturate.
"""

from __future__ import annotations

from collections.abc import Iterable

from sparsa.errors import SparsaError

VNNI_FEATURES = ("avx512_vnni", "avx_vnni", "amx_int8")  # /proc/cpuinfo names


def has_vnni(isa: Iterable[str]) -> bool:
    return any(f in VNNI_FEATURES for f in isa)


def this_cpu_isa() -> list[str]:
    from sparsa.metrics.cpu import cpu_info

    return cpu_info()["isa"]


def auto_weight_bits(isa: Iterable[str]) -> tuple[int, str]:
    """Weight bits for symmetric codes on ORT's fast u8×s8 kernels: 8 where VNNI makes them exact, else 7."""
    isa = list(isa)
    if has_vnni(isa):
        return 8, "8-bit codes: this CPU has VNNI, whose u8×s8 dot products accumulate in int32 (exact)"
    return 7, "7-bit codes: without VNNI, ORT's u8×s8 kernel saturates 8-bit codes (7-bit ones cannot)"


def choose_weight_storage(layers, mode: str, isa: Iterable[str]) -> tuple[str, str]:
    """("int8" | "uint8", why) for the weight codes of `layers` (QuantLinear) on a CPU with features `isa`.

    int8 selects ORT's u8×s8 kernels: taken when they are exact for these codes (static export's
    symmetric activations, 7-bit symmetric codes anywhere, 8-bit symmetric codes on VNNI); otherwise
    uint8 (codes + 128, zero point 128), ORT's u8×u8 kernels, exact for any codes."""
    layers = list(layers)
    if mode == "static":
        return "int8", "static export: int8 weights (QuantizeLinear's codes need no u8×s8 pair sums)"
    if any(q.w_zero_point is not None for q in layers):
        return "uint8", "asymmetric weight codes carry their own zero points (u8×u8)"
    top = max(q.bits for q in layers)
    if top <= 7:
        return "int8", f"{top}-bit codes: ORT's u8×s8 kernels cannot saturate"
    if has_vnni(isa):
        return "int8", "8-bit codes on u8×s8 kernels: the CPU has VNNI (int32 accumulation, exact)"
    return "uint8", "8-bit codes on u8×u8 kernels: without VNNI, u8×s8 would saturate"


def needs_vnni(layers, mode: str, weight_dtype: str) -> bool:
    """True when the file computes exactly only on a VNNI CPU: 8-bit symmetric codes stored int8 under
    dynamic u8 activations."""
    return (mode == "dynamic" and weight_dtype == "int8"
            and any(q.bits > 7 and q.w_zero_point is None for q in layers))


def check_cpu_runs(needs: str, path, isa: Iterable[str]) -> None:
    """Refuse a file whose integer kernels need CPU features `isa` lacks (they would give wrong numbers)."""
    if needs == "vnni" and not has_vnni(isa):
        raise SparsaError(f"{path} stores 8-bit weight codes for ONNX Runtime's u8×s8 kernels, which are exact "
                          "only on a CPU with VNNI; this CPU has none and would saturate them",
                          hint="export it on this CPU (the default picks the storage), or with weight_dtype='uint8', "
                               "or quantize with 7 bits")
