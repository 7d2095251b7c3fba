"""The CPU a figure was measured on: its model name and the ISA features that decide which integer
kernels ONNX Runtime and PyTorch pick (AVX2 u8×s8 vs AVX-512 VNNI vs AMX; NEON/dot-product on arm64)."""

from __future__ import annotations

import platform
from pathlib import Path

# the features that change integer GEMM kernels, in the names Linux's /proc/cpuinfo uses
ISA_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16", "asimd", "asimddp", "i8mm")


def cpu_info(cpuinfo: str | Path = "/proc/cpuinfo") -> dict:
    """{"model": str, "isa": [the ISA_FEATURES this CPU has], "machine": "x86_64" | "aarch64" | ...}.
    Where /proc/cpuinfo is missing (macOS, Windows) the model is platform.processor() and isa is []."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and value.strip():
            model = value.strip()
        elif key in ("flags", "features"):  # x86 / arm64
            flags |= set(value.split())
    return {"model": model, "isa": [f for f in ISA_FEATURES if f in flags], "machine": platform.machine()}


def cpu_line() -> str:
    """One line for a bench header: 'CPU: <model> (x86_64; avx2, avx512f, ...)'."""
    c = cpu_info()
    return f"CPU: {c['model']} ({c['machine']}; {', '.join(c['isa']) or 'no AVX2/AVX-512/VNNI/AMX'})"
