"""The hardware step: the compressed model (with its attention masks) as a workload, simulated on a preset."""

from __future__ import annotations

from typing import Any

import torch

from sparsa.pipeline.state import PipelineState, require
from sparsa.recipe import HardwareSpec


def flat_params(params: dict, prefix: str = "") -> dict[str, Any]:
    """Nested `hardware.params` as the dotted overrides `load_arch` takes."""
    out = {}
    for k, v in params.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_params(v, key + "."))
        else:
            out[key] = v
    return out


def load_arch(spec: HardwareSpec, resolve=lambda s: s):
    arch_mod = require("sparsa.hw.arch", "the hardware simulation")
    return arch_mod.load_arch(resolve(spec.arch), **flat_params(spec.params))


def simulate_gemm_only(spec: HardwareSpec, resolve=lambda s: s) -> dict:
    sim = require("sparsa.hw.sim", "the hardware simulation")
    arch = load_arch(spec, resolve)
    m, k, n = spec.gemm
    res = sim.simulate_gemm(int(m), int(k), int(n), arch)
    return {"arch": arch.name, "gemm": [m, k, n], "compressed": _summary(res), "ops": _ops(res)}


def simulate(state: PipelineState) -> dict:
    spec = state.recipe.hardware
    sim = require("sparsa.hw.sim", "the hardware simulation")
    workload = require("sparsa.hw.workload", "the hardware simulation")
    arch = load_arch(spec, state.recipe.resolve_path)
    seq_len = spec.seq_len or state.recipe.evaluation.seq_len
    inputs = hw_inputs(state, seq_len)
    masks = None
    if state.attention is not None:
        attention = require("sparsa.attention", "the attention stage")
        masks = attention.collect_masks(state.loaded, inputs, state.attention["method"], **state.attention["options"])
    wl = workload.from_model(state.loaded, seq_len, masks=masks)
    res = sim.simulate(wl, arch)
    out: dict[str, Any] = {
        "arch": arch.name,
        "placeholder_preset": bool(getattr(arch, "placeholder", False)),
        "seq_len": seq_len,
        "input": "real held-out text (sentences joined to fill the length)" if state.loaded.modality == "text"
        else "first held-out sample",
        "compressed": _summary(res),
        "ops": _ops(res),
    }
    if spec.dense_baseline:
        dense = sim.simulate(workload.from_model(state.reference, seq_len, masks=None), arch)
        out["dense"] = _summary(dense)
        out["dense_ops"] = _ops(dense)
        c, d = out["compressed"], out["dense"]
        if c.get("cycles") and d.get("cycles"):
            out["speedup"] = d["cycles"] / c["cycles"]
        if c.get("energy_pj") and d.get("energy_pj"):
            out["energy_saving"] = 1.0 - c["energy_pj"] / d["energy_pj"]
    return out


def hw_inputs(state: PipelineState, seq_len: int) -> dict:
    """A realistic input for the attention masks: real text / a real image, not random ids."""
    loaded = state.loaded
    data = state.eval_data()
    if data is not None and data.kind == "text" and loaded.tokenizer is not None:
        text = " ".join(data.texts[:64])
        enc = loaded.tokenizer([text], truncation=True, max_length=seq_len, padding="max_length", return_tensors="pt")
        return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    if data is not None and data.kind in ("image", "video"):
        key = next(iter(loaded.example_inputs(batch=1)))
        return {key: data.x[:1].to(torch.float32)}
    return loaded.example_inputs(batch=1, seq_len=seq_len)


_TOTAL_KEYS = ("cycles", "latency_s", "utilisation", "dram_bytes", "energy_pj", "area_mm2", "macs",
               "compute_cycles", "memory_cycles", "sram_bytes")


def _summary(res) -> dict:
    d = res.to_dict() if hasattr(res, "to_dict") else dict(res)
    tot = d.get("totals", d)
    out = {k: tot[k] for k in _TOTAL_KEYS if k in tot and isinstance(tot[k], (int, float))}
    for k, v in tot.items():
        if k not in out and isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = v
    if "area" in d and isinstance(d["area"], dict):
        out.setdefault("area_mm2", d["area"].get("total_mm2", d["area"].get("total")))
    return out


def _ops(res) -> list[dict]:
    d = res.to_dict() if hasattr(res, "to_dict") else dict(res)
    ops = d.get("ops") or d.get("per_op") or []
    return [{k: v for k, v in op.items() if isinstance(v, (int, float, str, bool)) or v is None} for op in ops]
