"""Installing attention pruning into HF models (BERT, RoBERTa, ELECTRA, DistilBERT, ViT, DeiT, Swin,
VideoMAE): reversible, exact when
nothing is pruned, per-layer statistics, masks per the shared contract, clear errors."""

import pytest
import torch

from sparsa.attention import collect_masks, install, uninstall
from sparsa.attention.install import attention_modules
from sparsa.errors import SparsaError
from sparsa.models.tiny import tiny_model


def _inputs(lm):
    g = torch.Generator().manual_seed(0)
    if lm.adapter.modality == "text":
        ids = torch.randint(5, 1000, (2, 11), generator=g)
        mask = torch.ones(2, 11, dtype=torch.long)
        mask[1, 7:] = 0  # padding in the second sentence
        return {"input_ids": ids, "attention_mask": mask}
    if lm.family == "videomae":
        return {"pixel_values": torch.randn(2, 4, 3, 16, 16, generator=g)}
    return {"pixel_values": torch.randn(2, 3, 16, 16, generator=g)}


def _out(lm, inputs):
    with torch.no_grad():
        o = lm.model(**inputs)
    return o.last_hidden_state if lm.adapter.modality == "text" else o.logits


@pytest.mark.parametrize("family", ["bert", "vit", "swin", "videomae", "roberta", "electra", "distilbert", "deit"])
def test_install_dense_is_exact_hdp_prunes_and_uninstall_restores(family):
    lm = tiny_model(family)
    inputs = _inputs(lm)
    ref = _out(lm, inputs)
    valid = inputs.get("attention_mask", torch.ones(2, 1)).bool()
    ctrl = install(lm.model, "dense")
    dense = _out(lm, inputs)
    if lm.adapter.modality == "text":  # padded query positions are not used downstream; compare real tokens
        assert torch.allclose(dense[valid], ref[valid], atol=1e-5)
    else:  # Swin: relative position bias and shifted-window mask went through sparsa's path
        assert torch.allclose(dense, ref, atol=1e-5)
    assert len(ctrl.layer_stats) == len(attention_modules(lm.model))
    uninstall(lm.model)
    ctrl = install(lm.model, "hdp")  # default rule runs end to end (tiny random Q·K: little to prune)
    _out(lm, inputs)
    assert 0.0 <= ctrl.totals()["block_sparsity"] < 1.0
    uninstall(lm.model)
    ctrl = install(lm.model, "topk", ratio=0.5, block=2)
    pruned = _out(lm, inputs)
    tot = ctrl.totals()
    assert 0.2 < tot["block_sparsity"] < 0.8
    assert [s["layer"] for s in ctrl.layer_stats] == list(range(len(attention_modules(lm.model))))
    assert not torch.allclose(pruned, ref)
    uninstall(lm.model)
    assert torch.equal(_out(lm, inputs), ref)  # reversible, bit for bit
    assert not any(hasattr(m, "_sparsa_ctrl") for m in lm.model.modules())


def test_collect_masks_contract():
    lm = tiny_model("bert")
    inputs = _inputs(lm)
    masks = collect_masks(lm, inputs, "hdp-seed", rho_b=0.0)
    assert len(masks) == 2
    for m in masks:
        assert m["block_mask"].dtype == torch.bool and m["block_mask"].shape == (2, 4, 6, 6)  # 11 → 12 padded
        assert m["head_mask"].shape == (2, 4) and m["head_mask"].dtype == torch.bool
        assert m["block_size"] == 2 and m["seq_len"] == 11
        assert m["valid_len"].tolist() == [11, 7]
        assert not m["block_mask"][1, :, 4:, :].any()  # padded block-rows keep nothing
    assert getattr(lm.model, "_sparsa_ctrl", None) is None


def test_spatten_and_topk_through_model():
    lm = tiny_model("vit")
    inputs = _inputs(lm)
    ctrl = install(lm.model, "spatten", ratio=0.5)
    _out(lm, inputs)
    st = ctrl.layer_stats
    assert st[0]["pruned_heads"] == 0 and st[1]["pruned_heads"] == 2 * 2  # floor(0.5·4) per image
    uninstall(lm.model)
    ctrl = install(lm.model, "topk", ratio=0.75, block=1)
    _out(lm, inputs)
    assert 0.6 < ctrl.totals()["attention_sparsity"] < 0.8
    uninstall(lm.model)


def test_errors():
    conv = tiny_model("conv")
    with pytest.raises(SparsaError, match="does not support"):
        install(conv.model, "hdp")
    lm = tiny_model("bert")
    with pytest.raises(SparsaError, match="unknown attention method"):
        install(lm.model, "magic")
    with pytest.raises(SparsaError, match="rho_b"):
        install(lm.model, "hdp-seed", rho_b=2.0)
    with pytest.raises(SparsaError, match="unknown option"):
        install(lm.model, "hdp", colour="red")
    from sparsa.attention.evaluate import evaluate_attention

    with pytest.raises(SparsaError, match="rho-b"):
        evaluate_attention(lm, "hdp-seed", rho_b=-3)
    with pytest.raises(SparsaError, match="family"):
        evaluate_attention(conv, "hdp")
    with pytest.raises(SparsaError, match="does not apply to hdp"):
        evaluate_attention(lm, "hdp", rho_b=0.2)


def test_hdp_family_defaults_resolve_and_apply(monkeypatch):
    """`hdp` picks its rule per family (ViT: signed 1×1 ρ_B row rule), HDPConfig() and the generic
    default stay as they were, explicit options win, and the installed masks are exactly the golden
    model's masks under the resolved config."""
    from sparsa.attention.hdp import HDPConfig, block_masks_int
    from sparsa.attention.methods import HDP_DEFAULTS, knob_for, make_config

    assert HDPConfig().threshold == "rho" and HDPConfig().importance == "abs" and HDPConfig().block == 2
    generic, vit = make_config("hdp"), make_config("hdp", "vit")
    assert generic == make_config("hdp", "bert") == HDPConfig(**HDP_DEFAULTS)
    assert (vit.importance, vit.threshold, vit.block, vit.split) == ("signed", "rho", 1, "round")
    assert make_config("hdp", "vit", threshold="gap", importance="rowmax", rho_b=0.0, pruned="drop") == generic
    assert make_config("hdp-seed", "vit") == make_config("hdp-seed")
    assert knob_for("hdp", "vit") == "rho_b" and knob_for("hdp", "bert") == "gap"

    lm = tiny_model("vit")
    seen = []
    import sparsa.attention.methods as M

    orig = M.hdp_attention_int

    def spy(q, k, v, cfg, valid, bias):
        seen.append((q, k, cfg, valid))
        return orig(q, k, v, cfg, valid, bias)

    monkeypatch.setattr(M, "hdp_attention_int", spy)
    ctrl = install(lm.model, "hdp", keep_masks=True)
    try:
        _out(lm, _inputs(lm))
    finally:
        uninstall(lm.model)
    assert seen and all(cfg == vit for _, _, cfg, _ in seen)
    q, k, cfg, valid = seen[0]
    assert torch.equal(ctrl.last_stats[0].block_mask, block_masks_int(q, k, cfg, valid)["block_mask"])


def test_asking_for_attention_weights_is_told_once_that_there_are_none():
    import warnings

    lm = tiny_model("bert")
    inputs = _inputs(lm)
    install(lm.model, "hdp")
    with pytest.warns(UserWarning, match="returns no attention weights") as rec:
        with torch.no_grad():
            out = lm.model(**inputs, output_attentions=True)
    assert len([w for w in rec if "attention weights" in str(w.message)]) == 1  # once, not once per layer
    assert out.last_hidden_state.shape[:2] == (2, 11)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no weights asked for: silent
        with torch.no_grad():
            lm.model(**inputs)
    uninstall(lm.model)
