"""A self-contained HTML report (figures embedded as base64 PNG, no scripts, no external files).

Every table and figure carries the recipe (name + digest) and the command that re-creates it.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from sparsa.io import atomic_write_text
from sparsa.report import front as fronts, plots

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{margin-bottom:.2em} h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em} th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
.prov{font-size:.8em;color:#555;margin:.2em 0 .8em} code{background:#f5f5f5;padding:0 .25em;border-radius:3px}
figure{margin:.8em 0} figure img{max-width:100%;border:1px solid #eee} figcaption{font-size:.8em;color:#555}
.note{background:#fff8e0;border-left:4px solid #e0b000;padding:.4em .8em;font-size:.9em}
.err{color:#a00}
table.reasons td:nth-child(2),table.ops td:nth-last-child(-n+2){text-align:left}
table.points td:last-child{font-family:monospace;font-size:.72em;text-align:left;word-break:break-all;max-width:32em}
"""


def esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def prov_line(prov: dict) -> str:
    return (f'<p class="prov">recipe <b>{esc(prov.get("recipe"))}</b> '
            f'(digest <code>{esc(prov.get("recipe_digest"))}</code>) · re-create: '
            f'<code>{esc(prov.get("command"))}</code></p>')


def figure(png: bytes | None, alt: str, prov: dict) -> str:
    if not png:
        return ""
    data = base64.b64encode(png).decode()
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}">'
            f'<figcaption>{esc(alt)} — recipe {esc(prov.get("recipe"))}, '
            f'<code>{esc(prov.get("command"))}</code></figcaption></figure>')


def table(headers: list[str], rows: list[list[Any]], prov: dict | None = None, cls: str = "",
          titles: list[str] | None = None) -> str:
    titles = titles or headers
    h = "".join(f'<th title="{esc(t)}">{esc(x)}</th>' for x, t in zip(headers, titles))
    body = "".join("<tr>" + "".join(f"<td>{esc(plots.fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    c = f' class="{cls}"' if cls else ""
    return f"<table{c}><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>" + (prov_line(prov) if prov else "")


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{esc(title)}</title><link rel="icon" href="data:,"><style>{CSS}</style></head>'
            f'<body>{body}</body></html>\n')


def render_run(results: dict) -> str:
    prov = results.get("provenance", {})
    rec = results.get("recipe", {})
    model = results.get("model", {})
    parts = [f"<h1>sparsa report: {esc(rec.get('name'))}</h1>"]
    if rec.get("description"):
        parts.append(f"<p>{esc(rec['description'])}</p>")
    meta = [["recipe", f"{rec.get('name')} ({rec.get('source')})"], ["recipe digest", rec.get("digest")],
            ["command", prov.get("command")], ["model", f"{model.get('name')} ({model.get('family')})" if model else "—"],
            ["sparsa", f"{prov.get('sparsa_version')} (git {prov.get('git_commit') or 'n/a'})"],
            ["created (UTC)", prov.get("created_utc")],
            ["host", ", ".join(f"{k} {v}" for k, v in (prov.get("host") or {}).items())],
            ["wall time", f"{results.get('timing', {}).get('total_s', 0):.1f} s (CPU "
                          f"{results.get('timing', {}).get('total_cpu_s', 0):.1f} s)"]]
    if rec.get("overrides"):
        meta.insert(2, ["overrides", rec["overrides"]])
    parts.append(table(["", ""], meta))

    stages = results.get("stages") or []
    if stages:
        parts.append("<h2>Size and quality per stage</h2>")
        rows = []
        for s in stages:
            q = s.get("quality") or {}
            att = s.get("attention") or {}
            stage_rec = s.get("record") if isinstance(s.get("record"), dict) else {}
            rows.append([s["label"], s.get("params"), s.get("nonzero_params"), s.get("bytes"), stage_rec.get("onnx_bytes"),
                         s.get("macs"), q.get("metric", "—"), q.get("value"), att.get("block_sparsity"), s.get("wall_s")])
        # "bytes": the model folder (embedding tables stay float there); the deployed integer ONNX file beside it
        parts.append(table(["stage", "params", "non-zero params", "bytes", "ONNX file bytes", "MACs", "quality metric",
                            "quality", "attention block sparsity", "stage time (s)"], rows, prov,
                           titles=["stage", "params", "non-zero params", "the model folder's bytes",
                                   "the integer ONNX file written by this stage (onnx: true)", "MACs", "quality metric",
                                   "quality", "attention block sparsity", "stage time (s)"]))
        q0 = stages[0].get("quality") or {}
        if q0.get("data"):
            parts.append(f"<p class='prov'>quality measured on {esc(q0['data'])}; MACs at {esc(stages[0].get('macs_at'))}</p>")
        parts.append(figure(plots.stages_plot(stages, prov.get("command")), "size, compute and quality per stage", prov))
        for s in stages[1:]:
            if s.get("record"):
                parts.append(f"<details><summary>record of stage {esc(s['label'])}</summary>"
                             f"<pre>{esc(_short_json(s['record']))}</pre></details>")

    final = results.get("final")
    if final:
        parts.append("<h2>Final model</h2>")
        rows = [[k, v] for k, v in final.get("ratios", {}).items()]
        q = final.get("quality") or {}
        rows += [[f"quality: {k}", v] for k, v in q.items() if isinstance(v, (int, float))]
        rows += [[f"attention: {k}", v] for k, v in (final.get("attention") or {}).items()]
        parts.append(table(["metric", "value"], rows, prov))

    layers = results.get("layers")
    if layers and layers.get("layers"):
        parts.append("<h2>Per-layer sparsity</h2>")
        att = _layer_attention(results)
        parts.append(figure(plots.sparsity_heatmap(layers, prov.get("command"), att),
                            "per-layer sparsity (fraction of dense weights removed or zero)", prov))

    lat, hw = results.get("latency"), results.get("hardware")
    if lat or hw:
        parts.append("<h2>Latency: measured and simulated</h2>")
        if lat:
            rows = [[k, v["median_ms"], v.get("p10_ms"), v.get("p90_ms"), v.get("runs"), v.get("threads")]
                    for k, v in lat.items() if isinstance(v, dict) and "median_ms" in v]
            parts.append(table(["backend", "median ms", "p10 ms", "p90 ms", "runs", "threads"], rows, prov))
            if lat.get("note"):
                parts.append(f"<p class='note'>{esc(lat['note'])}</p>")
        parts.append(figure(plots.latency_plot(lat, hw, prov.get("command")), "latency breakdown", prov))
    parts.append(_front_section(results, prov))
    if hw:
        parts.append("<h2>Simulated hardware</h2>")
        if hw.get("placeholder_preset"):
            parts.append(f"<p class='note'>preset {esc(hw.get('arch'))} has placeholder sizes (the seed gives no "
                         "numbers); treat absolute figures as illustrative, ratios as the result.</p>")
        keys = sorted(set(hw.get("compressed", {})) | set(hw.get("dense", {})))
        rows = [[k, (hw.get("dense") or {}).get(k, "—"), hw.get("compressed", {}).get(k, "—")] for k in keys]
        for k in ("speedup", "energy_saving"):
            if k in hw:
                rows.append([k, "", hw[k]])
        parts.append(table(["total", "dense", "compressed"], rows, prov))
        parts.append(figure(plots.ops_plot(hw, prov.get("command")), "utilisation and energy per op", prov))
        parts.append(_reasons_table(hw, prov))
        ops = hw.get("ops") or []
        if ops:
            cols = [c for c in ("name", "kind", "cycles", "utilisation", "dram_bytes", "energy_pj", "bound",
                                "exploited", "not_exploited") if any(c in op for op in ops)]
            rows = [["; ".join(v) if isinstance(v := op.get(c, ""), list) else v for c in cols] for op in ops]
            parts.append("<details><summary>per-op table (compressed model)</summary>"
                         + table(cols, rows, prov, cls="ops") + "</details>")
    parts.append(f"<h2>Recipe</h2><pre>{esc(_short_json(rec.get('content'), 100000))}</pre>")
    return page(f"sparsa report: {rec.get('name')}", "\n".join(parts))


def _front_section(results: dict, prov: dict) -> str:
    """The bundled quality/speed front of this run's model with the default recipe marked (empty
    when none is bundled for the model)."""
    front = fronts.bundled_front((results.get("model") or {}).get("name"))
    if front is None:
        return ""
    cpu = front["cpu"]
    run = fronts.this_run_point(results)
    parts = ["<h2>Quality/speed front</h2>",
             f"<p>Measured by <code>{esc(front['command'])}</code> on {esc(cpu['model'])} "
             f"({esc(', '.join(cpu['isa']))}), {esc(front['measured_utc'])}: {esc(front['latency'])}; "
             f"{esc(front['cosine'])}. The bundled default recipe is the point <b>{esc(front['default'])}</b>: "
             f"the fastest front point at cosine ≥ {front['cosine_floor']} that is at least as fast as INT8 alone.</p>"]
    load, cores = front.get("load_avg_1m"), front.get("cores")
    if load and cores and load > cores:
        parts.append(f"<p class='note'>Timed while other jobs shared the machine (load average {load} on {cores} "
                     "cores): absolute times are stretched, PyTorch's most; read the order of the points.</p>")
    if run is not None:
        parts.append(f"<p class='prov'>This run, timed on this host (read its speed-up, not its ms): "
                     f"{run['speedup']:.2f}× vs PyTorch dense at cosine {run['cosine']:.4f}.</p>")
    parts.append(figure(plots.front_plot(front, run, prov.get("command")),
                        "quality/speed front (bench/front.py), default recipe marked", prov))
    rows = [[p["name"], p["median_ms"], f"{p['p10_ms']:.1f}–{p['p90_ms']:.1f}", p["speedup_vs_torch_dense"],
             p["cosine"], p.get("ort_cosine"), "default" if p["default"] else ("yes" if p["on_front"] else "")]
            for p in front["points"]]
    parts.append(table(["candidate", "median ms", "p10–p90 ms", "× PyTorch dense", "cosine", "cosine (ONNX file)",
                        "on front"], rows, prov))
    return "\n".join(parts)


def _reasons_table(hw: dict, prov: dict) -> str:
    """What of the compression the preset turned into fewer cycles or bytes, and what not (with
    why), as the number of ops giving each reason, dense model next to the compressed one."""
    reasons = hw.get("reasons") or {}
    comp, dense = reasons.get("compressed") or {}, reasons.get("dense") or {}
    rows = []
    for key, label in (("exploited", "exploited"), ("not_exploited", "not exploited")):
        texts = list(dict.fromkeys([*(comp.get(key) or {}), *(dense.get(key) or {})]))
        rows += [[label, t, (dense.get(key) or {}).get(t, 0), (comp.get(key) or {}).get(t, 0)] for t in texts]
    exploits = hw.get("exploits") or {}
    can = ", ".join(k for k, v in exploits.items() if v) or "none"
    head = (f"<h3>What the preset exploits</h3><p>{esc(hw.get('arch'))} exploits: {esc(can)}"
            + (f" (not: {esc(', '.join(k for k, v in exploits.items() if not v))})" if exploits else "") + "</p>")
    if not rows:
        return head + "<p>No op carries compression the simulator could exploit (dense weights, native bits, no masks).</p>"
    return head + table(["", "reason", "ops (dense)", "ops (compressed)"], rows, prov, cls="reasons")


def _layer_attention(results: dict) -> list[float] | None:
    hw = results.get("hardware") or {}
    per = hw.get("attention_layers")
    return per if isinstance(per, list) else None


def _short_json(obj, limit: int = 4000) -> str:
    import json

    s = json.dumps(obj, indent=1, default=str)
    return s if len(s) <= limit else s[:limit] + "\n… (full record in results.json)"


def write_html_report(results: dict, path: str | Path) -> Path:
    return atomic_write_text(path, render_run(results))
