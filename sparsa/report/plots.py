"""Matplotlib figures for reports, returned as PNG bytes (headless Agg backend)."""

from __future__ import annotations

import io
from collections import defaultdict
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

_FOOT = dict(fontsize=7, color="#555555")


def _png(fig, footer: str | None = None) -> bytes:
    if footer:  # below everything else (tick labels included), so it never overlaps
        bb = fig.get_tightbbox(fig.canvas.get_renderer())
        fig.text(bb.x0 / fig.get_figwidth(), bb.y0 / fig.get_figheight() - 0.01, footer, ha="left", va="top", **_FOOT)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def stages_plot(stages: list[dict], footer: str) -> bytes | None:
    """Size and compute relative to dense, and quality, after each stage."""
    if not stages:
        return None
    labels = [s["label"] for s in stages]
    base = stages[0]
    x = np.arange(len(stages))
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    width = 0.26
    for i, (key, name) in enumerate((("params", "params"), ("bytes", "bytes"), ("macs", "MACs"))):
        vals = [s.get(key, np.nan) / base[key] if base.get(key) else np.nan for s in stages]
        ax.bar(x + (i - 1) * width, vals, width, label=f"{name} / dense")
    ax.set_xticks(x, labels)
    ax.set_ylabel("fraction of dense")
    ax.set_ylim(0, 1.15)
    q = [(s.get("quality") or {}).get("value") for s in stages]
    if any(v is not None for v in q):
        ax2 = ax.twinx()
        metric = next((s["quality"].get("metric") for s in stages if s.get("quality")), "quality")
        ax2.plot(x, [np.nan if v is None else v for v in q], "ko-", label=metric)
        ax2.set_ylabel(metric)
        lo = min(v for v in q if v is not None)
        ax2.set_ylim(min(lo - 0.02, 0.9 * lo), 1.005 if metric != "accuracy" or lo <= 1 else None)
        ax2.legend(loc="upper right", fontsize=8)
    ax.legend(loc="upper center", fontsize=8, ncol=3, bbox_to_anchor=(0.5, -0.12))
    ax.set_title("Size, compute and quality after each stage")
    return _png(fig, footer)


def sparsity_heatmap(layers: dict, footer: str, attention: list[float] | None = None) -> bytes | None:
    """Layers × weight kinds: fraction of the dense weights removed or zero."""
    if not layers or not layers.get("layers"):
        return None
    vals = np.array([[np.nan if v is None else v for v in row] for row in layers["values"]], dtype=float)
    kinds = list(layers["kinds"])
    if attention:
        # attention block sparsity of layer i goes on the row named "layer i"
        col = np.full((vals.shape[0], 1), np.nan)
        for r, name in enumerate(layers["layers"]):
            if name.startswith("layer ") and int(name.split()[-1]) < len(attention):
                col[r, 0] = attention[int(name.split()[-1])]
        vals = np.concatenate([vals, col], axis=1)
        kinds.append("attention blocks")
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(kinds) + 2.5), max(2.4, 0.38 * len(layers["layers"]) + 1.4)))
    im = ax.imshow(vals, vmin=0, vmax=1, cmap="magma_r", aspect="auto")
    ax.set_xticks(range(len(kinds)), kinds, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(layers["layers"])), layers["layers"], fontsize=8)
    for i in range(vals.shape[0]):
        for j in range(vals.shape[1]):
            if not np.isnan(vals[i, j]):
                ax.text(j, i, f"{vals[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if vals[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, label="sparsity (removed or zero)")
    ax.set_title("Per-layer sparsity")
    return _png(fig, footer)


def _op_kind(op: dict) -> str:
    for k in ("kind", "type", "op"):
        if isinstance(op.get(k), str):
            return op[k]
    name = str(op.get("name", "op"))
    return name.split(".")[-1].split("[")[0]


def latency_plot(latency: dict | None, hardware: dict | None, footer: str) -> bytes | None:
    """Measured CPU latency (left) and simulated cycles by op kind, dense vs compressed (right)."""
    meas = [(k, v) for k, v in (latency or {}).items() if isinstance(v, dict) and "median_ms" in v]
    sim = hardware and hardware.get("ops")
    if not meas and not sim:
        return None
    ncols = int(bool(meas)) + int(bool(sim))
    fig, axes = plt.subplots(1, ncols, figsize=(5.0 * ncols, 3.6), squeeze=False)
    col = 0
    if meas:
        ax = axes[0, col]
        col += 1
        names = [k for k, _ in meas]
        med = np.array([v["median_ms"] for _, v in meas])
        lo = np.array([v.get("p10_ms", v["median_ms"]) for _, v in meas])
        hi = np.array([v.get("p90_ms", v["median_ms"]) for _, v in meas])
        ax.bar(names, med, yerr=[med - lo, hi - med], capsize=4, color=["#888", "#2a7", "#27a", "#a72"][: len(names)])
        for i, m in enumerate(med):
            ax.text(i, m, f"{m:.1f}", ha="center", va="bottom", fontsize=8)
        ax.set_ylabel("ms (median, p10–p90)")
        ax.set_title(f"Measured CPU latency ({latency.get('threads', '?')} threads)", fontsize=10)
    if sim:
        ax = axes[0, col]
        series = [("compressed", hardware.get("ops") or [])]
        if hardware.get("dense_ops"):
            series.insert(0, ("dense", hardware["dense_ops"]))
        kinds: list[str] = []
        per = []
        for _, ops in series:
            acc: dict[str, float] = defaultdict(float)
            for op in ops:
                acc[_op_kind(op)] += float(op.get("cycles", 0) or 0)
                if _op_kind(op) not in kinds:
                    kinds.append(_op_kind(op))
            per.append(acc)
        bottom = np.zeros(len(series))
        cmap = plt.get_cmap("tab10")
        for i, kind in enumerate(kinds):
            v = np.array([acc.get(kind, 0.0) for acc in per])
            ax.bar([s for s, _ in series], v, bottom=bottom, label=kind, color=cmap(i % 10))
            bottom += v
        ax.set_ylabel("cycles")
        ax.set_title(f"Simulated on {hardware.get('arch', '?')}", fontsize=10)
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle("Latency: measured and simulated", fontsize=11)
    return _png(fig, footer)


def _op_group(op: dict) -> str:
    """`L3.ffn1` -> `ffn1`: the same op of every layer is one bar."""
    import re

    return re.sub(r"^L\d+\.", "", str(op.get("name", "op")))


def ops_plot(hardware: dict | None, footer: str) -> bytes | None:
    """Utilisation (cycle-weighted) and energy of each op, summed over the layers."""
    ops = (hardware or {}).get("ops") or []
    if not ops:
        return None
    groups: dict[str, dict[str, float]] = {}
    for op in ops:
        g = groups.setdefault(_op_group(op), {"cycles": 0.0, "busy": 0.0, "energy": 0.0, "n": 0, "kind": _op_kind(op)})
        cyc = float(op.get("cycles", 0) or 0)
        g["cycles"] += cyc
        g["busy"] += cyc * float(op.get("utilisation", 0) or 0)
        g["energy"] += float(op.get("energy_pj", 0) or 0)
        g["n"] += 1
    names = list(groups)
    util = [g["busy"] / g["cycles"] if g["cycles"] else 0.0 for g in groups.values()]
    energy = [g["energy"] / 1e6 for g in groups.values()]
    gemm = [g["kind"] == "gemm" for g in groups.values()]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, max(3.0, 0.3 * len(names) + 1.3)), sharey=True)
    y = np.arange(len(names))
    a1.barh(y, [u if isg else 0 for u, isg in zip(util, gemm)], color="#27a")
    a1.set_xlim(0, 1)
    a1.set_xlabel("PE-array utilisation (GEMMs, cycle-weighted)")
    a1.set_yticks(y, names, fontsize=8)
    a1.invert_yaxis()
    a2.barh(y, energy, color="#a52")
    for i, e in enumerate(energy):
        a2.text(e, i, f" {e:.3g}", va="center", fontsize=7)
    a2.set_xlabel("energy (µJ)")
    n_layers = max((g["n"] for g in groups.values()), default=1)
    fig.suptitle(f"Per-op utilisation and energy on {hardware.get('arch', '?')} (summed over {n_layers} layers)",
                 fontsize=11)
    return _png(fig, footer)


def pareto_plot(rows: list[dict], front: list[dict], objectives: list[dict], footer: str) -> bytes | None:
    """All points and the Pareto front over the first two objectives."""
    if len(objectives) < 1:
        return None
    mx = objectives[0]["metric"]
    my = objectives[1]["metric"] if len(objectives) > 1 else None

    def pts(rs):
        out = []
        for r in rs:
            m = r.get("metrics") or {}
            x = m.get(mx)
            y = m.get(my) if my else 0.0
            if isinstance(x, (int, float)) and isinstance(y, (int, float)):
                out.append((float(x), float(y)))
        return out

    allp, fp = pts(rows), sorted(pts(front))
    if not allp:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.scatter(*zip(*allp), s=18, c="#999", label=f"points ({len(allp)})")
    if fp:
        ax.plot(*zip(*fp), "o-", c="#c33", label=f"Pareto front ({len(fp)})")
    ax.set_xlabel(f"{mx} ({objectives[0]['goal']})")
    if my:
        ax.set_ylabel(f"{my} ({objectives[1]['goal']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Sweep: Pareto front")
    return _png(fig, footer)


def front_plot(front: dict, run: dict | None, footer: str) -> bytes | None:
    """Speed-up vs PyTorch dense (x) against cosine (y) of every measured candidate, the front as a
    line, the default recipe's point starred, and this run's point (timed on this host) as a ring.
    Speed-up rather than ms on x: a ratio timed in one run carries over between machines better."""
    pts = front.get("points") or []
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    x = [p["speedup_vs_torch_dense"] for p in pts]
    y = [p["cosine"] for p in pts]
    ax.scatter(x, y, s=22, c=["#c33" if p["on_front"] else "#999" for p in pts], zorder=2)
    on = sorted((p["speedup_vs_torch_dense"], p["cosine"]) for p in pts if p["on_front"])
    if on:
        ax.plot(*zip(*on), "-", c="#c33", lw=1, zorder=1, label="front")
    for p in pts:
        ax.annotate(p["name"], (p["speedup_vs_torch_dense"], p["cosine"]), fontsize=6, xytext=(4, -3),
                    textcoords="offset points", color="#333")
    d = next((p for p in pts if p["default"]), None)
    if d is not None:
        ax.scatter([d["speedup_vs_torch_dense"]], [d["cosine"]], s=180, marker="*", c="#27a", zorder=3,
                   label=f"default recipe ({d['speedup_vs_torch_dense']:.2f}×, cosine {d['cosine']:.4f})")
    if run is not None:
        ax.scatter([run["speedup"]], [run["cosine"]], s=90, facecolors="none", edgecolors="#2a7", lw=1.5, zorder=3,
                   label=f"this run ({run['speedup']:.2f}×, cosine {run['cosine']:.4f})")
    ax.axhline(front.get("cosine_floor", 0.99), ls=":", c="#777", lw=0.8)
    ax.set_xlabel("speed-up vs PyTorch FP32 dense (ONNX Runtime, same run)")
    ax.set_ylabel("held-out embedding cosine vs dense")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left")  # the corners hold the dense and the most pruned points
    cpu = front.get("cpu") or {}
    ax.set_title(f"Quality/speed front — {cpu.get('model', '?')}, {front.get('measured_utc', '?')}", fontsize=9)
    return _png(fig, footer)


def fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
            return f"{v:.4g}"
        return f"{v:.4f}".rstrip("0").rstrip(".") if abs(v) < 100 else f"{v:,.1f}"
    return str(v)
