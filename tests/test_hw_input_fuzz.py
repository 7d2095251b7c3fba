"""Generated input for the simulator's parsers (architecture presets, shape workloads): whatever
the input (huge numbers, NaN, inf, wrong types, deep nesting, unknown keys, arbitrary YAML text),
the outcome is a parsed value that simulates, or a SparsaError; never another exception."""

from __future__ import annotations

import copy
import math

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sparsa.errors import SparsaError  # noqa: E402
from sparsa.hw.arch import PRESET_DIR, load_arch  # noqa: E402
from sparsa.hw.shape_spec import parse_shape_spec, read_shape_spec, shape_workload  # noqa: E402
from sparsa.hw.sim import simulate, simulate_gemm  # noqa: E402

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.function_scoped_fixture])

nasty_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 2, 3, 4, 8, 64, 4096, 2**31, 2**63, -1, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, math.inf, -math.inf, 0.5, 1e308]),
    st.text(max_size=20), st.sampled_from(["os", "ws", "is", "tile", "block", "scalesim", "tiles", "1e9", ""]),
)
nasty = st.recursive(nasty_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)


def _leaf_paths(d, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaf_paths(v, prefix + (k,))
        else:
            yield prefix + (k,)


BASE = yaml.safe_load((PRESET_DIR / "hdp-edge.yaml").read_text())
PATHS = sorted(set(_leaf_paths(BASE)) | {("array", "pe_rows"), ("dram", "memory_model"), ("power_w",),
                                        ("area", "fpga"), ("bogus",), ("array", "bogus")})


@st.composite
def mutated_presets(draw):
    data = copy.deepcopy(BASE)
    for path in draw(st.lists(st.sampled_from(PATHS), min_size=1, max_size=4)):
        node = data
        for p in path[:-1]:
            node = node.setdefault(p, {}) if isinstance(node, dict) else node
        if isinstance(node, dict):
            node[path[-1]] = draw(nasty)
    if draw(st.booleans()):  # sometimes replace a whole section with junk
        data[draw(st.sampled_from(sorted(BASE)))] = draw(nasty)
    return data


def _arch_outcome(make):
    try:
        arch = make()
    except SparsaError:
        return
    # a machine that validates must simulate a GEMM to finite figures (or refuse it)
    try:
        r = simulate_gemm(64, 48, 40, arch)
    except SparsaError:
        return
    assert r.cycles >= 0 and math.isfinite(r.energy_pj) and math.isfinite(r.cycles / arch.clock_hz)


@FUZZ
@given(mutated_presets())
def test_preset_dicts(data):
    _arch_outcome(lambda: load_arch(data))


@FUZZ
@given(mutated_presets())
def test_preset_yaml_files(tmp_path_factory, data):
    f = tmp_path_factory.mktemp("arch") / "a.yaml"
    try:
        text = yaml.safe_dump(data)
    except yaml.YAMLError:
        return
    f.write_text(text)
    _arch_outcome(lambda: load_arch(str(f)))


yaml_texts = st.one_of(
    st.text(max_size=200),
    st.builds(lambda a, n: "x: &a " + a + "\n" + "".join(f"y{i}: [" + ", ".join(["*a"] * n) + "]\n" for i in range(3)),
              st.sampled_from(["[1, 2]", "{k: 1}", "1"]), st.integers(0, 50)),
    st.builds(lambda n, o, c: o * n + c * n, st.integers(0, 2000), st.sampled_from(["[", "{a: "]), st.sampled_from(["]", "}"])),
)


@settings(FUZZ, max_examples=30)
@given(yaml_texts)
def test_arbitrary_yaml_text(tmp_path_factory, text):
    f = tmp_path_factory.mktemp("txt") / "t.yaml"
    f.write_bytes(text.encode("utf-8", "replace"))  # lone surrogates become '?'; other bytes as generated
    _arch_outcome(lambda: load_arch(str(f)))
    try:
        read_shape_spec(str(f))
    except SparsaError:
        pass


SHAPE_KEYS = ["num_layers", "hidden", "heads", "head_dim", "ffn", "seq_len", "batch", "layers", "kind", "bogus"]
layer_dicts = st.dictionaries(st.sampled_from(["hidden", "heads", "head_dim", "ffn", "x"]),
                              st.one_of(st.integers(0, 256), nasty_scalars), max_size=5)
shape_dicts = st.dictionaries(st.sampled_from(SHAPE_KEYS), st.one_of(
    st.integers(0, 512), nasty, st.lists(layer_dicts, max_size=3)), max_size=6)


@FUZZ
@given(st.one_of(shape_dicts, nasty))
def test_shape_specs(data):
    try:
        spec = parse_shape_spec(data, "fuzz.yaml")
    except SparsaError:
        return
    wl = shape_workload(spec, "fuzz")
    if len(wl.ops) <= 300:  # simulating is closed form per op; keep the test quick
        try:
            r = simulate(wl, "hdp-edge")
        except SparsaError:  # past the 64-bit counters
            return
        assert r.cycles >= 0 and math.isfinite(r.energy_pj)
