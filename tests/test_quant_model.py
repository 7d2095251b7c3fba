"""quantize_ on models: integer storage, exact integer simulation, config, calibration errors, size, save/load."""

import json

import pytest
import torch
from torch import nn

from sparsa.errors import SparsaError
from sparsa.quant import QuantConfig, QuantLinear, load_quantized, quant_size, quantize_, save_quantized
from sparsa.quant.primitives import quantize


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(32, 8)
        self.norm = nn.LayerNorm(8)

    def forward(self, x):
        return self.norm(self.fc2(self.act(self.fc1(x))))


def _mlp(seed=0):
    torch.manual_seed(seed)
    return MLP().eval()


def _calib(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [{"x": torch.randn(3, 5, 16, generator=g)} for _ in range(n)]


def test_weights_are_integers_and_close():
    m, ref = _mlp(), _mlp()
    quantize_(m, QuantConfig(bits=8, scheme="sym", clip="search"))
    assert isinstance(m.fc1, QuantLinear) and m.fc1.qweight.dtype == torch.int8
    assert not any(p.is_floating_point() and p.shape == (32, 16) for p in m.fc1.buffers())  # no float weight copy
    x = torch.randn(4, 16)
    y, y_ref = m(x), ref(x)
    sqnr = 10 * torch.log10(y_ref.pow(2).mean() / (y - y_ref).pow(2).mean())
    assert sqnr > 30


@pytest.mark.parametrize("scheme", ["sym", "asym"])
def test_static_integer_simulation_is_exact(scheme):
    m = _mlp()
    quantize_(m, QuantConfig(scheme=scheme, activations="static"), calib=_calib())
    q = m.fc1
    x = torch.randn(2, 7, 16)
    aq = q.static_act_qparams()
    assert (aq.zero_point is None) == (scheme == "sym")
    # reference: int64 matmul of the codes, then the float32 rescale
    qx = quantize(x, aq).long() - (0 if aq.zero_point is None else int(aq.zero_point))
    qw = q.qweight.long() - (0 if q.w_zero_point is None else q.w_zero_point.long().view(-1, 1))
    acc = torch.einsum("btk,nk->btn", qx, qw)
    ref = acc.float() * (aq.scale * q.w_scale) + q.bias
    assert torch.equal(q(x), ref)


def test_dynamic_activations_follow_the_input_range():
    m = _mlp()
    quantize_(m, QuantConfig(activations="dynamic", act_scheme="asym"))
    x = torch.randn(3, 16)
    ap = m.fc1.act_qparams(x)
    assert ap.scheme == "asym" and torch.isclose(ap.scale, (x.max() - x.min()) / 255)
    assert torch.allclose(m.fc1(x), nn.functional.linear(x, m.fc1.dequantized_weight(), m.fc1.bias), atol=0.05)


def test_config_json_round_trip_and_overrides():
    cfg = QuantConfig(bits=4, clip="percentile", overrides={"fc2": {"bits": 8, "clip": "max"}, "nothing*": None})
    again = QuantConfig.from_json(cfg.to_json())
    assert again == cfg and json.loads(cfg.to_json())["version"] == 1
    m = _mlp()
    quantize_(m, cfg)
    assert (m.fc1.bits, m.fc2.bits) == (4, 8)
    m2 = _mlp()
    quantize_(m2, QuantConfig(overrides={"fc2": None}))
    assert isinstance(m2.fc1, QuantLinear) and type(m2.fc2) is nn.Linear


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"bits": 9}, "2..8"),
        ({"act_bits": "ternary"}, "ternary activations"),
        ({"activations": "sometimes"}, "none, dynamic, static"),
        ({"overrides": {"fc1": {"bitz": 4}}}, "unknown fields"),
        ({"overrides": {"fc1": {"bits": 1}}}, "2..8"),
        ({"bits": "ternary", "scheme": "asym"}, "symmetric"),
    ],
)
def test_bad_config(kwargs, words):
    with pytest.raises(SparsaError, match=words):
        QuantConfig(**kwargs)


def test_calibration_missing_or_wrong_shape():
    with pytest.raises(SparsaError, match="calibration"):
        quantize_(_mlp(), QuantConfig(activations="static"))
    with pytest.raises(SparsaError, match=r"rejected calibration batch 0 with shapes \{'x': \(2, 9\)\}"):
        quantize_(_mlp(), QuantConfig(activations="static"), calib=[{"x": torch.randn(2, 9)}])
    with pytest.raises(SparsaError, match="not a dict"):
        quantize_(_mlp(), QuantConfig(objective="output"), calib=[{"x": torch.randn(2, 16)}, torch.randn(2, 16)])


def test_smoothing_is_equivalent_before_rounding_and_needs_calibration():
    m, ref = _mlp(), _mlp()
    with pytest.raises(SparsaError, match="calibration"):
        quantize_(_mlp(), QuantConfig(smooth=0.5))
    quantize_(m, QuantConfig(smooth=0.5, overrides={"fc2": None}), calib=_calib())
    q = m.fc1
    assert q.smooth_inv is not None and not torch.allclose(q.smooth_inv, torch.ones(16))
    # dequantized W·diag(s) applied to x·diag(1/s) reproduces the float layer up to weight rounding
    x = torch.randn(4, 16)
    assert torch.allclose(m(x), ref(x), atol=0.05)
    with pytest.raises(SparsaError, match=r"\[0, 1\]"):
        QuantConfig(smooth=2.0)


def test_output_objective_uses_calibration():
    m = _mlp()
    quantize_(m, QuantConfig(bits=3, objective="output"), calib=_calib())
    assert m.fc1.bits == 3


def test_size_counts_real_bytes():
    m = _mlp()
    quantize_(m, QuantConfig(bits=8, per_channel=True, overrides={"fc2": {"bits": 4, "per_channel": False}}))
    s = quant_size(m)
    assert s["int_weight_bytes"] == 16 * 32 + 32 * 8 // 2
    assert s["scale_bytes"] == 4 * (32 + 1)
    assert s["zero_point_bytes"] == 0
    assert s["float_bytes"] == 4 * (32 + 8) + 4 * 16  # biases + LayerNorm
    assert s["fp32_bytes"] == 4 * (16 * 32 + 32 + 32 * 8 + 8 + 16)
    assert s["bytes"] == s["int_weight_bytes"] + s["scale_bytes"] + s["float_bytes"]
    m2 = _mlp()
    quantize_(m2, QuantConfig(scheme="asym"))
    assert quant_size(m2)["zero_point_bytes"] == 32 + 8


@pytest.mark.parametrize("cfg", [QuantConfig(bits=4), QuantConfig(bits=3, scheme="asym", activations="static"),
                                 QuantConfig(bits="ternary")])
def test_save_load_round_trip(tmp_path, cfg):
    m = _mlp()
    quantize_(m, cfg, calib=_calib())
    save_quantized(m, tmp_path / "q")
    back = load_quantized(tmp_path / "q", base=_mlp(seed=5))
    for name in ("fc1", "fc2"):
        a, b = getattr(m, name), getattr(back, name)
        assert torch.equal(a.qweight, b.qweight) and torch.equal(a.w_scale, b.w_scale)
    x = torch.randn(2, 16)
    assert torch.equal(m(x), back(x))
    # packed: a 4-bit / 3-bit weight takes bits/8 bytes per value in the file
    from safetensors.torch import load_file

    t = load_file(str(tmp_path / "q" / "quant.safetensors"))
    assert t["fc1.qweight"].numel() + (t["fc1.qmask"].numel() if "fc1.qmask" in t else 0) == m.fc1.storage_bytes()["weight"]
    if m.fc1.weight_format() == "dense":
        assert t["fc1.qweight"].numel() == -(-16 * 32 * m.fc1.bits // 8)


@pytest.mark.parametrize("bits", [8, 4])
def test_pruned_weights_are_stored_as_bitmap_and_round_trip(tmp_path, bits):
    m = _mlp()
    with torch.no_grad():  # magnitude-prune fc1 to 75% zeros; fc2 stays dense
        w = m.fc1.weight
        w[w.abs() <= w.abs().flatten().kthvalue(int(0.75 * w.numel())).values] = 0.0
    quantize_(m, QuantConfig(bits=bits))
    n, nnz = 16 * 32, int(torch.count_nonzero(m.fc1.qweight))
    assert nnz <= 0.25 * n
    assert m.fc1.weight_format() == "bitmap" and m.fc2.weight_format() == "dense"
    assert m.fc1.storage_bytes()["weight"] == n // 8 + -(-nnz * bits // 8)
    assert quant_size(m)["int_weight_bytes"] == n // 8 + -(-nnz * bits // 8) + 32 * 8 * bits // 8
    save_quantized(m, tmp_path / "q")
    from safetensors.torch import load_file

    t = load_file(str(tmp_path / "q" / "quant.safetensors"))
    assert t["fc1.qmask"].numel() + t["fc1.qweight"].numel() == m.fc1.storage_bytes()["weight"]
    assert "fc2.qmask" not in t
    back = load_quantized(tmp_path / "q", base=_mlp(seed=5))
    assert torch.equal(back.fc1.qweight, m.fc1.qweight) and torch.equal(back.fc2.qweight, m.fc2.qweight)
    x = torch.randn(2, 16)
    assert torch.equal(m(x), back(x))


def test_load_rejects_bad_folder(tmp_path):
    with pytest.raises(SparsaError, match="not a quantized-model folder"):
        load_quantized(tmp_path)


def test_calibration_data_of_the_wrong_kind_for_a_loaded_model():
    from transformers import BertConfig, BertModel

    from sparsa.data.dataset import Dataset
    from sparsa.models import from_module

    from transformers import AutoTokenizer

    from sparsa.models.store import minilm_path

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(minilm_path()))
    lm = from_module(BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1,
                                          num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)).eval(),
                     tokenizer=tok)
    images = Dataset("image", "digits", "calib", x=torch.randn(4, 3, 8, 8), y=torch.zeros(4, dtype=torch.long))
    with pytest.raises(SparsaError, match="text model but the calibration data is not text"):
        quantize_(lm.clone(), QuantConfig(activations="static"), calib=images)
    with pytest.raises(SparsaError, match="calibration texts are empty"):
        quantize_(lm.clone(), QuantConfig(activations="static"), calib=["", "  "])
    q = lm.clone()
    quantize_(q, QuantConfig(activations="static"), calib=["a short sentence", "another one"], seq_len=16)
    assert q.model.encoder.layer[0].output.dense.a_scale > 0


def test_float16_storage_halves_the_float_bytes_and_round_trips_exactly(tmp_path):
    from safetensors.torch import load_file

    from sparsa.models.tiny import tiny_model
    from sparsa.quant import float_storage, half_float_storage_

    lm = tiny_model("swin")  # norms, biases, patch embedding and relative-position tables stay float
    quantize_(lm, QuantConfig(bits=8))
    before = quant_size(lm)
    x = lm.example_inputs(batch=2)
    half_float_storage_(lm)
    after = quant_size(lm)
    assert float_storage(lm) == "float16"
    assert after["int_weight_bytes"] == before["int_weight_bytes"]  # codes untouched
    assert after["float_bytes"] * 2 == before["float_bytes"] and after["scale_bytes"] * 2 == before["scale_bytes"]
    assert after["fp32_bytes"] == before["fp32_bytes"]
    with torch.no_grad():
        y = lm.model(**x).logits
    save_quantized(lm, tmp_path / "q")  # a LoadedModel: a model folder
    t = load_file(str(tmp_path / "q" / "model.safetensors"))
    assert {v.dtype for v in t.values() if v.is_floating_point()} == {torch.float16}
    back = load_quantized(tmp_path / "q")
    assert float_storage(back) == "float16" and quant_size(back)["bytes"] == after["bytes"]
    with torch.no_grad():  # the in-memory model already computed with the float16 values: bit-exact
        assert torch.equal(back.model(**x).logits, y)
    with pytest.raises(SparsaError, match="quantized models"):
        half_float_storage_(tiny_model("vit"))
