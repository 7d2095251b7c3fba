"""Generated input into the recipe parser (YAML text and dicts) and the model-folder loader: a SparsaError
or a result comes out, nothing else (no traceback, no hang, no runaway allocation)."""

import json
import shutil

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsa.errors import SparsaError
from sparsa.models import bounds, load
from sparsa.recipe import STAGE_TYPES, parse_recipe, recipe_from_dict

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.text(max_size=12),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["minilm", "digits", "prune", "hdp", "0.5", "", "../x", "/etc/passwd"]),
)
keys = st.sampled_from(["name", "model", "type", "heads", "ffn", "stages", "seed", "data", "evaluation",
                        "hardware", "seq_len", "bits", "tolerance", "calib_samples", "x", ""])
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                      max_leaves=20)
stage = st.fixed_dictionaries({"type": st.sampled_from(STAGE_TYPES)}, optional={k: values for k in
                              ("heads", "ffn", "bits", "tolerance", "calib_samples", "rho_b", "block", "smooth")})
recipes = st.fixed_dictionaries({"name": values, "model": st.sampled_from(["minilm", "tiny-cnn", None, 3])},
                                optional={"stages": st.lists(stage, max_size=3), "seed": values, "evaluation": values,
                                          "data": values, "hardware": values})


def _only_sparsa_errors(fn):
    try:
        fn()
    except SparsaError:
        pass


@FUZZ
@given(recipes)
def test_recipe_dicts(raw):
    _only_sparsa_errors(lambda: recipe_from_dict(raw))


@FUZZ
@given(recipes)
def test_recipe_yaml_text(raw):
    text = yaml.safe_dump(raw, allow_unicode=True)
    _only_sparsa_errors(lambda: parse_recipe(text, source="fuzz.yaml"))


@FUZZ
@given(st.text(alphabet="ab:-[]{}&*!|>'\"#\n ,.0123456789", max_size=120))
def test_recipe_yaml_garbage(text):
    _only_sparsa_errors(lambda: parse_recipe(text, source="fuzz.yaml"))


@pytest.fixture(scope="module")
def cnn_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cnn") / "m"
    load("tiny-cnn").save(folder)
    return folder


big_ints = st.one_of(st.integers(-3, 40), st.sampled_from([10**8, 10**12, 2**63]))
meta_edits = st.fixed_dictionaries({}, optional={
    "shape_field": st.tuples(st.sampled_from(["out_channels", "in_channels", "num_features", "groups", "type", ""]),
                             st.one_of(big_ints, scalars)),
    "init_kwargs": st.dictionaries(st.sampled_from(["width", "hidden", "num_classes", "image_size", "bogus", ""]),
                                   st.one_of(big_ints, scalars), max_size=3),
    "attrs": st.dictionaries(st.sampled_from(["", "conv1", "no.such"]),
                             st.dictionaries(st.sampled_from(["", "num_heads", "x y", "training"]), values, max_size=2),
                             max_size=2),
    "params": st.dictionaries(st.sampled_from(["", "conv1.weight", "nope"]), values, max_size=2),
    "tied": st.dictionaries(st.sampled_from(["a", "conv1.weight"]), values, max_size=2),
    "input_shape": values,
    "kind": st.sampled_from(["hf", "module", "x", None]),
    "version": st.one_of(big_ints, scalars),
})


@FUZZ
@given(edits=meta_edits)
def test_model_folder_sparsa_json(cnn_folder, tmp_path_factory, monkeypatch, edits):
    # the size checks judge against the machine: a fixed 8 GB keeps every generated case bounded everywhere
    monkeypatch.setattr(bounds, "machine_memory_bytes", lambda: 8 << 30)
    folder = tmp_path_factory.mktemp("fuzz") / "m"
    shutil.copytree(cnn_folder, folder)
    meta = json.loads((folder / "sparsa.json").read_text())
    for k, v in edits.items():
        if k == "shape_field":
            first = next(iter(meta["shapes"]))
            meta["shapes"][first][v[0]] = v[1]
        elif k in ("init_kwargs", "attrs", "params", "tied"):
            meta[k] = {**meta.get(k, {}), **v}
        else:
            meta[k] = v
    (folder / "sparsa.json").write_text(json.dumps(meta))
    _only_sparsa_errors(lambda: load(folder))
