"""Workloads from models (pruned head counts, recorded HDP masks) and the `sparsa sim` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from sparsa.cli import app
from sparsa.errors import SparsaError
from sparsa.hw.sim import simulate
from sparsa.hw.workload import LayerShape, from_model, from_shapes


def test_shapes_workload_counts_bert_base_macs():
    w = from_shapes(num_layers=12, hidden=768, heads=12, ffn=3072, seq_len=512)
    per_layer = 4 * 512 * 768 * 768 + 2 * 512 * 768 * 3072 + 2 * 12 * 512 * 512 * 64
    assert w.dense_macs == 12 * per_layer
    kinds = {op.kind for op in w.ops}
    assert kinds == {"gemm", "softmax", "elementwise"}


def test_pruned_layers_shrink_the_workload():
    full = from_shapes([LayerShape(64, 4, 16, 128)] * 2, seq_len=16)
    pruned = from_shapes([LayerShape(64, 2, 16, 64), LayerShape(64, 4, 16, 32)], seq_len=16)
    q0 = next(o for o in pruned.ops if o.name == "L0.q")
    assert (q0.m, q0.k, q0.n) == (16, 64, 32)
    qk0 = next(o for o in pruned.ops if o.name == "L0.qk")
    assert qk0.count == 2
    assert pruned.dense_macs < full.dense_macs


def test_from_model_reads_real_shapes(tiny_bert):
    w = from_model(tiny_bert, seq_len=32)
    q = next(o for o in w.ops if o.module == "encoder.layer.1.attention.self.query")
    ffn1 = next(o for o in w.ops if o.module == "encoder.layer.1.intermediate.dense")
    assert (q.m, q.k, q.n) == (32, 64, 64) and ffn1.n == 128 and q.layer == ffn1.layer == 1
    qk = next(o for o in w.ops if o.role == "qk" and o.layer == 1)
    assert (qk.m, qk.k, qk.n, qk.count) == (32, 16, 32, 4)  # per head: 32x16 . 16x32, 4 heads
    assert w.meta["heads_per_layer"] == [4, 4]


def test_hdp_masks_drive_the_sparse_ops(tiny_bert):
    from sparsa.attention import collect_masks

    inputs = tiny_bert.example_inputs(batch=1, seq_len=32)
    masks = collect_masks(tiny_bert, inputs, "hdp")
    w = from_model(tiny_bert, masks=masks)
    assert w.seq_len == masks[0]["seq_len"]
    for i, mk in enumerate(masks):
        kept = (np.asarray(mk["block_mask"]) & np.asarray(mk["head_mask"])[:, :, None, None]).sum()
        b = mk["block_size"]
        frac = next(o for o in w.ops if o.role == "qk_frac" and o.layer == i)
        soft = next(o for o in w.ops if o.role == "softmax" and o.layer == i)
        assert frac.out_mask.sum() == kept and soft.elems == kept * b * b
    r = simulate(w, "hdp-edge")
    r_dense = simulate(from_model(tiny_bert, seq_len=w.seq_len), "hdp-edge")
    frac_macs = sum(o.macs for o in r.ops if o.name.endswith("qk_frac"))
    b = masks[0]["block_size"]
    assert frac_macs == sum(o.out_mask.sum() for o in w.ops if o.role == "qk_frac") * b * b * 2 * 16
    assert r.cycles > 0 and r_dense.cycles > 0


def test_mask_head_count_mismatch_is_reported():
    from sparsa.hw.workload import synthetic_masks

    masks = synthetic_masks(1, 3, 16)
    with pytest.raises(SparsaError, match="3 heads but the model has 4"):
        from_shapes(num_layers=1, hidden=64, heads=4, ffn=64, seq_len=16, masks=masks)


runner = CliRunner()


def test_cli_gemm_json():
    res = runner.invoke(app, ["sim", "--gemm", "20,30,12", "--arch", "systolic-32-os", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["gemm"] == [20, 30, 12] and out["cycles"] == 30 + 32 + 32 - 2


def test_cli_shape_workload_reports_layers():
    res = runner.invoke(app, ["sim", "bert-tiny", "--arch", "hdp-edge", "--seq-len", "32", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert len(out["layers"]) == 2 and all(d["bound"] in ("compute", "memory") for d in out["layers"])


def test_cli_bad_input_messages():
    from sparsa.cli import main  # noqa: F401  (main turns SparsaError into exit 2)

    res = runner.invoke(app, ["sim", "--gemm", "1,2", "--arch", "systolic-32-os"])
    assert isinstance(res.exception, SparsaError) and "M,K,N" in res.exception.message
    res = runner.invoke(app, ["sim", "--gemm", "1,2,3", "--arch", "no-such-arch"])
    assert isinstance(res.exception, SparsaError) and "no architecture preset" in res.exception.message


def test_cli_shape_file_per_layer_and_bad_files(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("layers: [{hidden: 64, heads: 2, head_dim: 32, ffn: 128}, {hidden: 64, heads: 1, head_dim: 32, ffn: 64}]\n")
    res = runner.invoke(app, ["sim", str(good), "--arch", "hdp-edge", "--seq-len", "16", "--json"])
    assert res.exit_code == 0, res.output
    one = from_shapes([LayerShape(64, 1, 32, 64)], seq_len=16)
    assert json.loads(res.stdout)["workload"]["gemm_macs_dense"] == from_shapes(
        [LayerShape(64, 2, 32, 128)], seq_len=16).dense_macs + one.dense_macs
    for text, message in (("layers: foo\n", "list of mappings"), ("layers: [{hidden: 64, heads: 2}]\n", "head_dim"),
                          ("layers: [\n", "malformed YAML")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        res = runner.invoke(app, ["sim", str(bad), "--arch", "hdp-edge"])
        assert isinstance(res.exception, SparsaError) and message in res.exception.message, (text, res.output)


def test_token_counts_of_other_families():
    from sparsa.models.tiny import tiny_model

    # ViT: 16 patches + [CLS]; DeiT: + the distillation token (read from its position table)
    assert from_model(tiny_model("vit")).seq_len == 17
    assert from_model(tiny_model("deit")).seq_len == 18
    # text: 128 tokens, or the model's position limit (RoBERTa: 70 - padding_idx - 1)
    assert from_model(tiny_model("roberta")).seq_len == 68
    assert from_model(tiny_model("distilbert")).meta["family"] == "distilbert"


def test_text_fidelity_without_a_tokenizer_is_a_clear_error():
    from sparsa.metrics import fidelity
    from sparsa.models.tiny import tiny_model

    lm = tiny_model("bert")
    with pytest.raises(SparsaError, match="tokenizer"):
        fidelity(lm, lm, ["a sentence"], lm.tokenizer)
