"""The hardware step: the compressed model (with its attention masks) as a workload, simulated on a preset."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sparsa.pipeline.state import PipelineState
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
    from sparsa.hw import arch as arch_mod
    return arch_mod.load_arch(resolve(spec.arch), **flat_params(spec.params))


def simulate_gemm_only(spec: HardwareSpec, resolve=lambda s: s) -> dict:
    from sparsa.hw import sim
    arch = load_arch(spec, resolve)
    m, k, n = spec.gemm
    res = sim.simulate_gemm(int(m), int(k), int(n), arch)
    return {"arch": arch.name, "placeholder_preset": bool(getattr(arch, "placeholder", False)), "gemm": [m, k, n],
            "compressed": _summary(res, arch), "ops": _ops(res)}


def simulate(state: PipelineState) -> dict:
    spec = state.recipe.hardware
    from sparsa.hw import sim
    from sparsa.hw import workload
    arch = load_arch(spec, state.recipe.resolve_path)
    text = state.loaded.modality == "text"
    seq_len = spec.seq_len or (state.recipe.evaluation.seq_len if text else None)  # vision: from the config
    inputs = hw_inputs(state, seq_len or state.recipe.evaluation.seq_len)
    masks = None
    if state.attention is not None:
        from sparsa.attention import collect_masks
        masks = collect_masks(state.loaded, inputs, state.attention["method"], **state.attention["options"])
    wl = workload.from_model(state.loaded, masks=masks, inputs=inputs)
    res = sim.simulate(wl, arch)
    out: dict[str, Any] = {
        "arch": arch.name,
        "placeholder_preset": bool(getattr(arch, "placeholder", False)),
        "seq_len": wl.seq_len,
        "input": "real held-out text (sentences joined to fill the length)" if state.loaded.modality == "text"
        else "first held-out sample",
        "compressed": _summary(res, arch),
        "ops": _ops(res),
        "layers": _layers(res),
    }
    if masks is not None:
        out["attention_layers"] = _attention_layers(masks)
    if spec.dense_baseline:
        dense = sim.simulate(workload.from_model(state.reference, inputs=inputs), arch)
        out["dense"] = _summary(dense, arch)
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
        import torch

        key = next(iter(loaded.example_inputs(batch=1)))
        return {key: data.x[:1].to(torch.float32)}
    return loaded.example_inputs(batch=1, seq_len=seq_len)


def _summary(res, arch) -> dict:
    """Totals of a simulation (SimResult or a single GEMM's OpResult) as plain numbers."""
    if hasattr(res, "to_dict"):
        d = res.to_dict(per_op=False)
        out = {k: d[k] for k in ("cycles", "stall_cycles", "latency_s", "macs", "dram_bytes", "energy_pj")}
        out["utilisation"] = res.utilisation(arch.macs)
        area = d.get("area_mm2") or {}
        if isinstance(area, dict) and "total" in area:
            out["area_mm2"] = area["total"]
    else:
        d = asdict(res)
        out = {k: d[k] for k in ("cycles", "stall_cycles", "macs", "dram_bytes", "energy_pj", "utilisation")}
        out["latency_s"] = res.cycles / arch.clock_hz
    if "area_mm2" not in out:
        area = arch.total_area()
        if isinstance(area, dict) and "total" in area:
            out["area_mm2"] = area["total"]
    return out


def _ops(res) -> list[dict]:
    ops = res.ops if hasattr(res, "ops") else [res]
    return [{k: v for k, v in asdict(op).items() if not isinstance(v, (dict, list))} for op in ops]


def _layers(res) -> list[dict]:
    return [{k: v for k, v in d.items() if not isinstance(v, list)} | {"memory_bound_ops": ", ".join(d.get("memory_bound_ops", []))}
            for d in res.per_layer()]


def _attention_layers(masks: list[dict]) -> list[float]:
    """Per-layer block sparsity of the masks the simulator was given (for the heat map)."""
    out = []
    for m in masks:
        st = m.get("stats") or {}
        if st.get("valid_blocks"):
            out.append(1.0 - st["kept_blocks"] / st["valid_blocks"])
        else:
            out.append(1.0 - float(m["block_mask"].float().mean()))
    return out
