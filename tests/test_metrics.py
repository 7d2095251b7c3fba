"""Cost and quality metrics count what they claim to count."""

import pytest
import torch
from torch import nn

from sparsa.errors import SparsaError
from sparsa.metrics import (accuracy, count_macs, count_params, fidelity, logit_agreement, measure_latency,
                            measure_latency_pair, model_bytes)
from sparsa.models.tiny import tiny_model


class _Lin(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(x)


def test_params_bytes_macs_linear():
    m = _Lin()
    assert count_params(m) == 10 * 8 + 8 * 4 + 4
    assert count_params(m, exclude_embeddings=True) == 8 * 4 + 4
    assert model_bytes(m) == 4 * count_params(m)
    assert count_macs(m, {"x": torch.randn(3, 5, 8)}) == 3 * 5 * 8 * 4


def test_macs_include_attention_matmuls():
    lm = tiny_model("bert")  # hidden 32, 4 heads, FFN 64, 2 layers
    n, d, f, layers = 16, 32, 64, 2
    x = lm.example_inputs(batch=1, seq_len=n)
    per_layer = 4 * n * d * d + 2 * n * n * d + 2 * n * d * f  # QKVO + (Q·Kᵀ, A·V) + FFN
    pooler = d * d  # BertPooler on the first token
    assert count_macs(lm, x) == layers * per_layer + pooler


def test_latency_summary_and_threads():
    before = torch.get_num_threads()
    r = measure_latency(lambda: torch.ones(64, 64) @ torch.ones(64, 64), warmup=1, runs=7, threads=1)
    assert set(r) >= {"median_ms", "p10_ms", "p90_ms", "runs", "threads"}
    assert r["runs"] == 7 and r["threads"] == 1 and r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]
    assert torch.get_num_threads() == before
    a, b = measure_latency_pair(lambda: None, lambda: None, warmup=0, runs=3, threads=1)
    assert a["runs"] == b["runs"] == 3
    with pytest.raises(SparsaError):
        measure_latency(lambda: None, runs=0)


class _Tok:
    """A minimal tokenizer: one id per word (tests fidelity without downloads)."""

    def __call__(self, texts, padding=True, truncation=True, max_length=128, return_tensors="pt"):
        ids = [[101] + [1000 + (hash(w) % 100) for w in t.split()][: max_length - 2] + [102] for t in texts]
        n = max(map(len, ids))
        mask = [[1] * len(i) + [0] * (n - len(i)) for i in ids]
        ids = [i + [0] * (n - len(i)) for i in ids]
        return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}


def test_fidelity_self_and_other():
    lm = tiny_model("bert")
    other = tiny_model("bert", seed=1)
    texts = ["a b c", "the quick brown fox jumps", "one"]
    f = fidelity(lm, lm, texts, _Tok())
    assert f["cosine_mean"] == pytest.approx(1.0, abs=1e-6) and f["n_texts"] == 3
    assert fidelity(other, lm, texts, _Tok())["cosine_mean"] < 0.999
    with pytest.raises(SparsaError):
        fidelity(lm, lm, [], _Tok())


def test_accuracy_on_data_of_the_wrong_size_is_a_sparsa_error():
    lm = tiny_model("vit")  # built for 16x16 images
    ds = type("DS", (), {})()
    ds.x, ds.y = torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.long)
    with pytest.raises(SparsaError, match=r"shape \(3, 32, 32\) but the model takes \(3, 16, 16\)"):
        accuracy(lm, ds)


def test_accuracy_and_agreement():
    lm = tiny_model("vit")
    x = torch.randn(10, 3, 16, 16)

    class DS:
        pass

    ds = DS()
    ds.x = x
    with torch.no_grad():
        ds.y = lm.model(pixel_values=x).logits.argmax(-1)
    assert accuracy(lm, ds) == 1.0
    agree = logit_agreement(lm, lm, ds)
    assert agree["top1_agreement"] == 1.0 and agree["logit_mse"] == 0.0


def test_latency_pair_ratios_on_a_fake_clock(monkeypatch):
    """Deterministic: a fake clock that each call advances by a known amount (no real timing)."""
    import types

    import sparsa.metrics.latency as lat

    now = [0.0]
    fake = types.SimpleNamespace(perf_counter=lambda: now[0], process_time=lambda: now[0])
    monkeypatch.setattr(lat, "time", fake)
    a_costs = iter([0.004, 0.006, 0.004, 0.005, 0.004] * 2)  # seconds, warm-up included
    b_costs = iter([0.001, 0.002, 0.001, 0.001, 0.002] * 2)

    def tick(costs):
        now[0] += next(costs)

    a, b = measure_latency_pair(lambda: tick(a_costs), lambda: tick(b_costs), warmup=0, runs=5)
    assert a["min_ms"] == pytest.approx(4.0) and b["min_ms"] == pytest.approx(1.0)
    assert a["best_ratio"] == pytest.approx(4.0)
    assert a["paired_ratio_median"] == pytest.approx(4.0)  # pairs 4, 3, 4, 5, 2 -> median 4
    assert a["median_ms"] == pytest.approx(4.0) and b["median_ms"] == pytest.approx(1.0)


def test_latency_blocks_cycle_over_the_fns_on_a_fake_clock(monkeypatch):
    """Each round: pause, warm-up calls (not timed), then timed calls, for every fn in turn."""
    import types

    import sparsa.metrics.latency as lat
    from sparsa.metrics import measure_latency_blocks

    now, order, pauses = [0.0], [], []
    monkeypatch.setattr(lat, "time", types.SimpleNamespace(perf_counter=lambda: now[0], sleep=pauses.append))

    def fn(name, cost):
        def call():
            order.append(name)
            now[0] += cost
        return call

    times = measure_latency_blocks({"a": fn("a", 0.003), "b": fn("b", 0.001)}, rounds=2, warmup=1, runs=2, pause=0.2)
    assert times["a"] == pytest.approx([3.0] * 4) and times["b"] == pytest.approx([1.0] * 4)
    assert order == ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3
    assert pauses == [0.2] * 4



def test_cpu_info_reads_model_and_isa_features(tmp_path):
    """Parsed from a given /proc/cpuinfo text (x86 and arm64 layouts), so the test holds on any CPU."""
    from sparsa.metrics.cpu import cpu_info

    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni amx_int8\n")
    info = cpu_info(x86)
    assert info["model"] == "Test CPU 9000" and info["isa"] == ["avx2", "avx512f", "avx512_vnni", "amx_int8"]
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\n")
    assert cpu_info(arm)["isa"] == ["asimd", "asimddp", "i8mm"]
    assert cpu_info(tmp_path / "missing")["isa"] == []


def test_latency_percentiles_stay_within_the_measured_times():
    """With few runs the default (exclusive) quantiles extrapolate: 3 runs of 1, 1 and 40 ms gave a
    negative p10 and a p90 beyond the slowest run (seen in `sparsa eval --runs 3`)."""
    from sparsa.metrics.latency import _summary

    r = _summary([1.0, 1.2, 40.0], threads=1)
    assert 1.0 <= r["p10_ms"] <= r["median_ms"] <= r["p90_ms"] <= 40.0
