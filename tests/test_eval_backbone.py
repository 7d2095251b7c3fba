"""A vision backbone without a classification head (ViTModel, Dinov2Model, ...) has no accuracy: `sparsa eval`
compares its outputs with the reference's, sample by sample, and says so when no reference is known."""

import json

import pytest
import torch
import transformers as tf
from typer.testing import CliRunner

import sparsa.cli  # noqa: F401  registers the command modules
from sparsa.cli.app import app
from sparsa.errors import SparsaError
from sparsa.metrics.quality import NoClassifierHead, output_fidelity, predict_logits
from sparsa.models import load

runner = CliRunner()


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("vit") / "vit"
    tf.ViTModel(tf.ViTConfig(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64), add_pooling_layer=False).eval().save_pretrained(d)
    return d


def _json(r):
    assert r.exit_code == 0, (r.output, r.exception)
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_accuracy_of_a_backbone_is_refused_with_what_to_do_instead(backbone):
    lm = load(str(backbone))
    x = lm.example_inputs(batch=3)["pixel_values"]
    with pytest.raises(NoClassifierHead, match="no classification head") as e:
        predict_logits(lm, x)
    assert isinstance(e.value, SparsaError) and "--reference" in e.value.hint


def test_a_backbone_is_found_after_one_sample_and_a_classifier_still_sees_every_sample_once(backbone):
    lm = load(str(backbone))
    seen = []
    lm.model.register_forward_pre_hook(lambda _m, args, kwargs: seen.append(len(kwargs["pixel_values"])),
                                       with_kwargs=True)
    x = lm.example_inputs(batch=10)["pixel_values"]
    with pytest.raises(NoClassifierHead):
        predict_logits(lm, x, batch_size=4)
    assert seen == [1]  # not a batch of 4 run for nothing
    seen.clear()

    class Head(torch.nn.Module):  # the same backbone with a head: logits for every sample, in order
        def __init__(self, body):
            super().__init__()
            self.body, self.head = body, torch.nn.Linear(32, 3)

        def forward(self, pixel_values):
            return self.head(self.body(pixel_values=pixel_values).last_hidden_state[:, 0])

    clf = Head(lm.model).eval()
    logits = predict_logits(clf, x, batch_size=4)
    assert seen == [1, 4, 4, 1] and logits.shape == (10, 3)
    with torch.no_grad():
        torch.testing.assert_close(logits, clf(x), rtol=1e-4, atol=1e-5)


def test_output_fidelity_is_one_for_the_same_model_and_below_for_a_pruned_one(backbone, tmp_path):
    lm = load(str(backbone))
    x = torch.randn(5, 3, 16, 16)
    same = output_fidelity(lm, lm, x, batch_size=2)
    assert same["n_samples"] == 5 and same["cosine_min"] > 0.99999
    _json(runner.invoke(app, ["prune", str(backbone), "--ffn", "0.5", "--out", str(tmp_path / "p"), "--json"]))
    pruned = output_fidelity(load(str(tmp_path / "p")), lm, x, batch_size=2)
    assert 0.0 < pruned["cosine_mean"] < 0.9999


def test_eval_of_a_quantized_backbone_compares_outputs_with_its_original(backbone, tmp_path):
    _json(runner.invoke(app, ["quantize", str(backbone), "--bits", "8", "--out", str(tmp_path / "q"), "--json"]))
    r = _json(runner.invoke(app, ["eval", str(tmp_path / "q"), "--reference", str(backbone), "--runs", "1",
                                  "--samples", "8", "--json"]))
    assert "accuracy" not in r and r["n_samples"] == 8 and r["compared"] == "main output per sample"
    assert 0.99 < r["cosine_mean"] < 1.0 and r["cosine_min"] <= r["cosine_p10"] <= r["cosine_mean"]


def test_a_recipe_on_a_backbone_reports_output_fidelity(backbone, tmp_path):
    from sparsa.pipeline import run_recipe
    from sparsa.recipe import parse_recipe

    recipe = {"name": "backbone", "model": str(backbone), "stages": [{"type": "quantize", "bits": 8}],
              "evaluation": {"per_stage": False, "latency": None, "max_samples": 8},
              "hardware": {"arch": "hdp-edge", "dense_baseline": False}}
    res = run_recipe(parse_recipe(json.dumps(recipe), source="b.yaml"), tmp_path / "r", quiet=True, html=False)
    q = res["final"]["quality"]
    assert q["metric"] == "cosine_mean" and "accuracy" not in q and q["n_samples"] == 8
    assert 0.99 < q["value"] == q["cosine_mean"] < 1.0


def test_dynamic_attention_on_a_backbone_is_scored_by_its_outputs(backbone):
    r = _json(runner.invoke(app, ["eval", str(backbone), "--attention", "hdp", "--samples", "8", "--runs", "1",
                                  "--json"]))
    assert "accuracy" not in r and r["n_samples"] == 8 and r["compared"] == "main output per sample"
    assert 0.0 < r["cosine_mean"] <= 1.0 and 0.0 <= r["attention_sparsity"] < 1.0
