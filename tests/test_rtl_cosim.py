"""RTL units vs the HDP integer golden model, bit for bit (Amaranth's Python simulator).

Every unit runs >= 500 vectors, random plus adversarial (extreme codes, saturated inputs, ties,
all-pruned rows, pruned heads); the mutation tests show that a one-bit deviation is caught."""

from __future__ import annotations

import pytest

from sparsa.hw.rtl import cosim

# unit, preset, overrides: sizes small enough for the Python simulator, widths as in the presets
CASES = [
    ("pe", None, {"head_dim": 8}),
    ("pe_array", None, {"head_dim": 4, "pe_rows": 2, "pe_cols": 2}),
    ("sparsity_engine", None, {"head_dim": 8, "max_blocks": 8}),
    ("softmax", None, {"head_dim": 8, "max_blocks": 4}),
    ("ncore", "seed000", {}),  # seed 000's 4 lanes, 8-bit in, 16-bit out, 2-cycle latency
    ("ncore", "hdp-server", {"head_dim": 4}),  # 8 cores of HDP PEs
]


@pytest.mark.parametrize("unit,preset,over", CASES, ids=[f"{u}-{p or ''}-{'-'.join(map(str, o.values()))}" for u, p, o in CASES])
def test_unit_bit_exact(unit, preset, over):
    res = cosim(unit, 500, preset=preset, seed=1, **over)
    assert res.vectors >= 500
    assert res.checked_outputs >= res.vectors
    assert res.mismatches == 0, res.first_mismatch
    assert res.ok


def test_trunc_split_bit_exact():
    # the alternative split of docs/algorithms.md §1.2, on both sides
    res = cosim("pe", 200, seed=6, head_dim=8, split="trunc")
    assert res.vectors == 200 and res.mismatches == 0


def test_adversarial_kinds_are_covered():
    se = cosim("sparsity_engine", 120, seed=2, head_dim=8, max_blocks=8)
    assert {"ties", "padded", "pruned_head", "saturated", "zero", "rho_extreme"} <= set(se.kinds)
    sm = cosim("softmax", 70, seed=2, head_dim=8, max_blocks=4)
    assert {"all_pruned", "single_kept", "ties", "wide_range", "extreme"} <= set(sm.kinds)
    pe = cosim("pe", 50, seed=2, head_dim=4)
    assert any(k.startswith("saturated/") for k in pe.kinds) and any(k.startswith("extreme/") for k in pe.kinds)
    assert se.ok and sm.ok and pe.ok


@pytest.mark.parametrize(
    "unit,over,mutation",
    [
        ("pe", {"head_dim": 4}, {"split": "trunc"}),  # RTL splits toward zero, reference floors
        ("softmax", {"head_dim": 8, "max_blocks": 4}, {"rounding": "nearest"}),  # P rounded, reference floors
        ("sparsity_engine", {"head_dim": 8, "max_blocks": 8}, {"strict": True}),  # ties pruned ('>' not '>=')
        ("ncore", {"head_dim": 4, "cores": 2, "lane_kind": "pe"}, {"split": "trunc"}),
    ],
)
def test_one_bit_difference_is_caught(unit, over, mutation):
    good = cosim(unit, 120, seed=3, **over)
    bad = cosim(unit, 120, seed=3, mutate=mutation, **over)
    assert good.mismatches == 0
    assert bad.mismatches > 0
    fm = bad.first_mismatch
    assert fm is not None and fm["expected"] != fm["got"]


def test_mutation_can_differ_by_one_lsb():
    # the rounding mutation of the softmax changes P by exactly one unit in the last place somewhere
    from sparsa.hw.rtl.cosim import get_unit
    from sparsa.hw.rtl.params import load_params
    from sparsa.hw.rtl.trace import run_amaranth

    import torch

    p = load_params(head_dim=8, max_blocks=4)
    spec = get_unit("softmax")
    batch = spec.make_batch(p, torch.Generator().manual_seed(4), 60)
    got = run_amaranth(spec.build(p, rounding="nearest"), batch.trace, strobe="p_valid")
    diffs = {abs(got[c]["p"] - e["p"]) for c, e in batch.expect.items() if got[c] is not None}
    assert 1 in diffs
