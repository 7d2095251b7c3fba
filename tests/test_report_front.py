"""The demo model's measured quality/speed front (bundled from bench/front.py), the default recipe
chosen from it, and the run report that shows it."""

from __future__ import annotations

import re

import pytest

from sparsa.dse.pareto import pareto_front
from sparsa.recipe import load_recipe
from sparsa.report import front as fronts
from sparsa.report.html import render_run


@pytest.fixture(scope="module")
def front():
    f = fronts.bundled_front("minilm")
    assert f is not None, "sparsa/report/data/minilm_front.json is bundled"
    return f


def test_bundled_front_says_where_and_when_it_was_measured(front):
    assert front["cpu"]["model"] and isinstance(front["cpu"]["isa"], list)
    assert re.match(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", front["measured_utc"])
    assert front["command"].startswith("PYTHONPATH=. ") and "bench/front.py" in front["command"]


def test_front_flags_are_the_pareto_front_of_the_points(front):
    rows = [{"key": p["name"], "metrics": {"ms": p["median_ms"], "cos": p["cosine"]}} for p in front["points"]]
    want = {r["key"] for r in pareto_front(rows, [{"metric": "ms", "goal": "min"}, {"metric": "cos", "goal": "max"}])}
    assert {p["name"] for p in front["points"] if p["on_front"]} == want


def test_default_point_meets_the_floor_and_the_speed_of_int8_alone(front):
    defaults = [p for p in front["points"] if p["default"]]
    assert len(defaults) == 1 and defaults[0]["name"] == front["default"]
    d = defaults[0]
    int8 = next(p for p in front["points"] if p["name"] == "dense + INT8")
    assert d["on_front"] and d["cosine"] >= front["cosine_floor"] >= 0.99
    assert d["median_ms"] <= int8["median_ms"]
    # the choice rule: no faster front point also meets the floor and the INT8 speed
    faster = [p for p in front["points"] if p["on_front"] and p["cosine"] >= front["cosine_floor"]
              and p["median_ms"] < d["median_ms"]]
    assert faster == []


def test_bundled_default_recipe_is_the_front_default(front):
    d = next(p for p in front["points"] if p["default"])
    stages = load_recipe("default").recipe.stages
    by_type = {s.type: s for s in stages}
    prune = by_type.get("prune")
    assert ((prune.heads, prune.ffn) if prune else (0.0, 0.0)) == (d["prune_heads"], d["prune_ffn"])
    assert ("attention" in by_type) == d["hdp"]
    q = by_type.get("quantize")
    assert (q is not None) == d["int8"]
    if q is not None:  # the INT8 settings bench/front.py measured
        assert (q.bits, q.smooth, q.smooth_ffn_out, q.onnx, q.onnx_fuse, q.split_layernorm) == (7, 0.5, 0.7, True,
                                                                                              True, True)


def _results(model: str) -> dict:
    return {"provenance": {"recipe": "default", "recipe_digest": "abc123abc123", "command": "sparsa run"},
            "recipe": {"name": "default"}, "model": {"name": model, "family": "bert"},
            "final": {"quality": {"cosine_mean": 0.9966, "metric": "cosine_mean", "value": 0.9966}},
            "latency": {"threads": 2, "torch_dense": {"median_ms": 30.0}, "onnxruntime": {"median_ms": 12.0}}}


def test_report_shows_the_front_with_the_default_and_this_run_marked(front):
    html = render_run(_results("minilm"))
    i = html.index("<h2>Quality/speed front</h2>")
    sec = html[i:html.index("<h2>", i + 5)]
    assert front["default"] in sec and front["cpu"]["model"] in sec and front["measured_utc"] in sec
    assert "data:image/png;base64," in sec and "default recipe marked" in sec
    assert "2.50× vs PyTorch dense at cosine 0.9966" in sec  # this run's own ratio, 30 / 12 ms
    assert sec.count("<tr>") == len(front["points"]) + 1 and ">default<" in sec


def test_no_front_section_for_a_model_without_a_measured_front():
    assert "Quality/speed front" not in render_run(_results("tiny-bert"))


def test_stage_table_shows_the_onnx_file_beside_the_folder_bytes():
    res = _results("tiny-bert") | {"stages": [
        {"label": "dense", "params": 100, "bytes": 90_000_000},
        {"label": "quantize", "params": 100, "bytes": 57_000_000, "record": {"onnx_bytes": 23_000_000}}]}
    html = render_run(res)
    i = html.index("<h2>Size and quality per stage</h2>")
    sec = html[i:html.index("</table>", i)]
    assert ">ONNX file bytes<" in sec
    rows = sec.split("<tr>")[2:]  # after the header row
    assert "<td>57,000,000</td><td>23,000,000</td>" in rows[1]  # folder bytes, then the ONNX file's
    assert "<td>90,000,000</td><td>—</td>" in rows[0]  # the dense stage wrote no ONNX file
