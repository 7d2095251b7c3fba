"""The traced workload: the simulator runs the ops the model's forward pass runs.

MACs are compared with `sparsa info`'s flop counter for equality (not within a tolerance): the
tracer records the counter's own per-op counts, so any difference is a bug, on any CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sparsa.cli import app
from sparsa.errors import SparsaError
from sparsa.hw.arch import PRESET_DIR, load_arch
from sparsa.hw.sim import simulate
from sparsa.hw.workload import from_model, from_shapes, synthetic_masks
from sparsa.metrics import count_macs
from sparsa.models.tiny import tiny_model

runner = CliRunner()
FAMILIES = ("bert", "distilbert", "vit", "deit", "swin", "videomae", "conv", "roberta")


def _swin_shifted():
    """Swin with shifted windows and a padded stage: 12x12 patches in 4x4 windows (9), then 6x6
    padded to 8x8 (4 windows, shifted in the second block)."""
    import transformers as tf

    from sparsa.models import from_module

    torch.manual_seed(0)
    cfg = tf.SwinConfig(image_size=48, patch_size=4, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4,
                        num_labels=3)
    return from_module(tf.SwinForImageClassification(cfg).eval(), source="tiny-swin-shifted")


@pytest.mark.parametrize("family", FAMILIES)
def test_traced_macs_equal_the_flop_counter(family):
    lm = tiny_model(family)
    w = from_model(lm)
    assert w.dense_macs == count_macs(lm.model, lm.example_inputs(batch=1)) == w.meta["flop_counter_macs"]
    assert w.meta["not_simulated"] == []
    assert simulate(w, "systolic-32-os").macs == w.dense_macs


def test_swin_is_simulated_per_window_and_stage():
    lm = _swin_shifted()
    w = from_model(lm)
    assert w.dense_macs == count_macs(lm.model, lm.example_inputs(batch=1))
    qk = [o for o in w.ops if o.role == "qk"]
    # stage 1: 9 windows x 2 heads, stage 2: 4 (padded) windows x 4 heads; 16 tokens per window
    assert [(o.count, o.m, o.n, o.layer) for o in qk] == [(18, 16, 16, 0), (18, 16, 16, 1), (16, 16, 16, 2),
                                                         (16, 16, 16, 3)]
    assert w.seq_len == 144  # 12 x 12 patches enter the first attention layer


@pytest.mark.parametrize("fixture", ["tiny-vit", "tiny-swin", "tiny-videomae", "tiny-cnn"])
def test_cli_sim_macs_equal_info_macs(fixture):
    sim = runner.invoke(app, ["sim", fixture, "--arch", "systolic-32-os", "--json"])
    assert sim.exit_code == 0, sim.output
    info = runner.invoke(app, ["info", fixture, "--json"])
    assert info.exit_code == 0, info.output
    assert json.loads(sim.stdout)["macs"] == json.loads(info.stdout)["macs"]


def test_shape_workload_agrees_with_the_trace_of_the_same_config():
    import transformers as tf

    from sparsa.models import from_module

    torch.manual_seed(0)
    cfg = tf.BertConfig(vocab_size=1200, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=256, max_position_embeddings=128)
    traced = from_model(from_module(tf.BertModel(cfg).eval(), config=cfg, source="bert-cfg"), seq_len=96)
    shapes = from_shapes(num_layers=3, hidden=64, heads=4, ffn=256, seq_len=96)
    # the shape workload leaves out only the pooler (64x64 on the [CLS] token): well under 1%
    assert abs(shapes.dense_macs - traced.dense_macs) <= 0.01 * traced.dense_macs
    assert traced.dense_macs - shapes.dense_macs == 64 * 64


def test_swin_hdp_masks_each_window():
    from sparsa.attention import collect_masks

    lm = _swin_shifted()
    inputs = lm.example_inputs(batch=1)
    masks = collect_masks(lm, inputs, "hdp")
    w = from_model(lm, masks=masks, inputs=inputs)
    frac = [o for o in w.ops if o.role == "qk_frac"]
    assert [o.count for o in frac] == [18, 18, 16, 16]
    for o, mk in zip(frac, masks):
        kept = np.asarray(mk["block_mask"]) & np.asarray(mk["head_mask"])[:, :, None, None]
        assert o.out_mask.shape[0] == o.count and o.out_mask.sum() == kept.sum()
    assert not any(o.role == "qk" for o in w.ops)  # every score product runs under its window's masks
    dense = simulate(from_model(lm, inputs=inputs), "hdp-edge")
    sparse = simulate(w, "hdp-edge")
    assert sparse.cycles > 0 and dense.cycles > 0
    res = runner.invoke(app, ["sim", "tiny-swin", "--arch", "hdp-edge", "--attention", "hdp", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["workload"]["attention"] == "masked"


def test_masks_from_another_input_are_refused():
    from sparsa.attention import collect_masks

    lm = tiny_model("bert")
    masks = collect_masks(lm, lm.example_inputs(batch=1, seq_len=32), "hdp")
    with pytest.raises(SparsaError, match="score matrices"):
        from_model(lm, masks=masks, inputs=lm.example_inputs(batch=1, seq_len=48))


def test_one_trace_serves_the_dense_and_the_masked_workload():
    """`sparsa sim --attention` traces once and reuses it after recording masks: the workloads built
    from the shared trace equal those traced afresh."""
    from sparsa.attention import collect_masks
    from sparsa.hw.workload import trace_loaded

    lm = _swin_shifted()
    inputs = lm.example_inputs(batch=1)
    tr = trace_loaded(lm, inputs)
    masks = collect_masks(lm, inputs, "hdp")
    for mk in (None, masks):
        shared, fresh = from_model(lm, masks=mk, inputs=inputs, trace=tr), from_model(lm, masks=mk, inputs=inputs)
        assert shared.summary() == fresh.summary()
        assert [(o.name, o.m, o.k, o.n, o.count) for o in shared.ops] == [(o.name, o.m, o.k, o.n, o.count) for o in fresh.ops]
        assert simulate(shared, "hdp-edge").cycles == simulate(fresh, "hdp-edge").cycles
    with pytest.raises(SparsaError, match="needs the inputs"):
        from_model(lm, trace=tr)


def _presets():
    return sorted(p.stem for p in Path(PRESET_DIR).glob("*.yaml"))


@pytest.mark.parametrize("preset", _presets())
def test_utilisation_is_never_above_one(preset):
    from sparsa.attention import collect_masks

    arch = load_arch(preset)
    lm = _swin_shifted()
    inputs = lm.example_inputs(batch=1)
    workloads = [
        from_shapes(num_layers=2, hidden=64, heads=4, ffn=128, seq_len=64),
        # split multipliers run the 4-bit integer/fractional passes four to a MAC: still one MAC slot
        from_shapes(num_layers=2, hidden=64, heads=4, ffn=128, seq_len=64, masks=synthetic_masks(2, 4, 64)),
        from_model(lm, masks=collect_masks(lm, inputs, "hdp"), inputs=inputs),
    ]
    for w in workloads:
        r = simulate(w, arch)
        for o in r.ops:
            assert o.utilisation <= 1.0, (preset, o.name, o.utilisation)
        assert r.utilisation(arch.macs) <= 1.0


def test_an_op_the_tracer_cannot_place_is_listed_with_its_share(monkeypatch):
    import sparsa.metrics.cost as cost

    class Spectral(torch.nn.Module):  # an FFT the simulator has no unit for, after a Linear
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(16, 16)

        def forward(self, x):
            return torch.fft.rfft(self.fc(x), dim=-1).abs()

    fft = torch.ops.aten._fft_r2c
    base = cost.flop_mapping
    # give the FFT a flop formula (as a custom kernel's author would), so the counter counts it
    monkeypatch.setattr(cost, "flop_mapping", lambda: {**base(), fft: lambda x_shape, *a, **k: 2 * 1000})
    from sparsa.hw.trace import trace_model

    tr = trace_model(Spectral(), {"x": torch.randn(4, 16)})
    assert tr.flop_counter_macs == 4 * 16 * 16 + 1000
    assert tr.macs == 4 * 16 * 16
    (entry,) = [d for d in tr.not_simulated if d["op"] == "aten._fft_r2c"]
    assert entry["macs"] == 1000 and entry["share"] == pytest.approx(1000 / (1024 + 1000))


def test_a_failing_forward_names_the_input_it_tried():
    lm = tiny_model("vit")  # 16x16 images
    with pytest.raises(SparsaError, match=r"pixel_values \[1, 3, 7, 7\]"):
        from_model(lm, inputs={"pixel_values": torch.randn(1, 3, 7, 7)})
    with pytest.raises(SparsaError, match="text models"):
        from_model(lm, seq_len=64)


def _quantized_bert(bits: int, activations: str):
    from sparsa.quant.api import quantize_
    from sparsa.quant.config import QuantConfig

    lm = tiny_model("bert")
    quantize_(lm, QuantConfig(bits=bits, clip="max", activations=activations, act_bits=bits))
    return from_model(lm, seq_len=32)


def test_quantized_layers_carry_their_bits_to_the_simulator():
    w8, w4 = _quantized_bert(8, "none"), _quantized_bert(4, "none")
    linears = [o for o in w4.ops if o.kind == "gemm" and o.role == ""]
    assert linears and all(o.weight_bits == 4 and o.operand_bits is None for o in linears)
    assert w4.dense_macs == w8.dense_macs  # the weights' dequantization is the GEMM's datapath, not extra work
    arch = load_arch("systolic-32-os")
    r8, r4 = simulate(w8, arch), simulate(w4, arch)
    assert r4.dram_bytes < r8.dram_bytes
    assert sum(o.compute_cycles for o in r4.ops) == sum(o.compute_cycles for o in r8.ops)  # no narrow lanes


def test_narrow_operands_run_faster_only_on_split_multipliers():
    a8, a4 = _quantized_bert(8, "dynamic"), _quantized_bert(4, "dynamic")
    assert all(o.operand_bits == 4 for o in a4.ops if o.kind == "gemm" and o.weight_bits)
    split, plain = load_arch("hdp-edge"), load_arch("systolic-32-os")
    assert split.bits.split_multipliers and not plain.bits.split_multipliers
    assert simulate(a4, split).cycles < simulate(a8, split).cycles
    assert sum(o.compute_cycles for o in simulate(a4, plain).ops) == sum(o.compute_cycles for o in simulate(a8, plain).ops)


def test_installed_dynamic_attention_is_traced_as_the_attention_it_stands_for():
    from sparsa.attention import collect_masks
    from sparsa.attention.install import install, uninstall

    lm = tiny_model("bert")
    inputs = lm.example_inputs(batch=1, seq_len=32)
    plain = from_model(lm, inputs=inputs)
    ctrl = install(lm.model, "hdp")
    try:
        with torch.no_grad():
            lm.model(**inputs)
        stats = list(ctrl.layer_stats)
        traced = from_model(lm, inputs=inputs)  # not HDP's fixed-point emulation ops
        assert [(o.name, o.m, o.k, o.n, o.count) for o in traced.ops] == [(o.name, o.m, o.k, o.n, o.count)
                                                                       for o in plain.ops]
        assert ctrl.layer_stats == stats and lm.model.config._attn_implementation == "sparsa"
        masked = from_model(lm, masks=collect_masks(lm, inputs, "hdp"), inputs=inputs)
        assert sum(o.role == "qk_frac" for o in masked.ops) == 2
    finally:
        uninstall(lm.model)


def test_cli_names_what_it_cannot_simulate():
    res = runner.invoke(app, ["sim", "tiny-vit", "--arch", "hdp-edge", "--seq-len", "64"])
    assert isinstance(res.exception, SparsaError) and "--seq-len applies to text models" in res.exception.message


def test_layers_kept_in_parallel_lists_get_their_ffn_ops():
    """XLM keeps attentions[i] and ffns[i] (and its norms) in separate ModuleLists: the FFN's GEMMs ran
    under no layer, so the simulator's per-layer rows held only the attention's MACs."""
    import transformers as tf

    from sparsa.hw.sim import simulate
    from sparsa.hw.workload import from_model
    from sparsa.models import from_module

    torch.manual_seed(0)
    lm = from_module(tf.XLMModel(tf.XLMConfig(vocab_size=100, emb_dim=32, n_layers=2, n_heads=2,
                                              max_position_embeddings=40)))
    w = from_model(lm)
    ffn = [o for o in w.ops if "ffns" in o.name]
    assert ffn and {o.layer for o in ffn} == {0, 1} and all(o.name.startswith(f"L{o.layer}.ffns.") for o in ffn)
    r = simulate(w, "systolic-32-os")
    in_layers = sum(row["macs"] for row in r.per_layer())
    assert 0.9 * r.macs <= in_layers <= r.macs  # outside the layers: the embeddings' few MACs, not the FFNs
