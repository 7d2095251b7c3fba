"""bench/int8_ceiling.py's verdict (issue 20, acceptance 2) and its glue floor: the rules that turn one run's
timings into MET / NOT MET / NOT DECIDED, on made-up timings."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def ceiling():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("int8_ceiling_under_test", BENCH / "int8_ceiling.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(BENCH))


def _files(sparsa_ms, rival_ms, rival_cos=1.0):
    return {"sparsa": {"ms": sparsa_ms, "cosine": 0.996, "sparsa": True},
            "ort": {"ms": rival_ms, "cosine": rival_cos, "sparsa": False}}


def test_a_file_at_90_percent_of_the_bound_and_faster_than_its_rivals_meets_it(ceiling):
    assert ceiling.verdict(_files(6.6, 7.0), 6.0, 5.5, reachable=0.95).endswith("-> MET")


def test_a_rival_as_fast_at_the_same_or_higher_cosine_fails_it(ceiling):
    assert "-> NOT MET" in ceiling.verdict(_files(6.6, 6.5), 6.0, 5.5, reachable=0.95)
    # a faster rival of lower cosine does not count
    assert ceiling.verdict(_files(6.6, 6.5, rival_cos=0.99), 6.0, 5.5, reachable=0.95).endswith("-> MET")


def test_a_cap_below_the_floor_is_named_and_a_file_read_above_it_decides_nothing(ceiling):
    below = ceiling.verdict(_files(7.5, 18.0), 6.0, 5.5, reachable=0.86)
    assert "NOT MET (out of reach on this CPU" in below and "86.0%" in below
    above = ceiling.verdict(_files(6.6, 18.0), 6.0, 5.5, reachable=0.86)  # 90.9% of the bound, over the cap
    assert "NOT DECIDED: met in this run's numbers" in above and "4.9 points above" in above


def test_a_noisy_bound_decides_nothing_whatever_the_numbers(ceiling):
    assert "NOT DECIDED: a noisy run" in ceiling.verdict(_files(6.6, 7.0), 7.0, 5.0, reachable=0.95)


def test_the_glue_floor_takes_each_parts_fastest_kernel_less_one_empty_call(ceiling):
    med = {"empty call": 0.01, ("glue", "norm", "a"): 0.50, ("glue", "norm", "b"): 1.50,
           ("glue", "gelu", "x"): 0.40, ("glue", "gelu", "y"): 0.30, ("file", "f"): 9.0}
    g = ceiling.glue_floor(med)
    assert g["fastest"] == {"norm": "a", "gelu": "y"}
    assert g["floor"] == pytest.approx(0.49 + 0.29)


def test_every_glue_kernel_builds_and_runs_for_a_bert_config(ceiling):
    import transformers as tf

    cfg = tf.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    fns = ceiling.glue_fns(cfg, seq=16, threads=1)
    assert {part for part, _ in fns} == {"residual + LayerNorm", "GELU", "embeddings + LayerNorm"}
    assert all(len([k for k in fns if k[0] == part]) >= 2 for part, _ in fns)  # each part has its alternatives
    for f in fns.values():
        f()
