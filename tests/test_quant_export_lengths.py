"""An ONNX file whose traced graph holds its export length as a constant declares that length fixed."""

import pytest
import torch
from torch import nn

from sparsa.errors import SparsaError
from sparsa.quant import QuantConfig, quantize_
from sparsa.quant.export import export_info, export_onnx
from sparsa.quant.onnx_model import OnnxModel


class LengthBound(nn.Module):
    """Scales by the sequence length read as a Python int: the tracer records it as a constant."""

    def __init__(self):
        super().__init__()
        self.emb, self.lin = nn.Embedding(50, 8), nn.Linear(8, 8)

    def forward(self, input_ids):
        h = self.lin(self.emb(input_ids))
        return h * int(h.shape[1])


class AnyLength(LengthBound):
    def forward(self, input_ids):
        return self.lin(self.emb(input_ids))


def _cos(a, b) -> float:  # the file quantizes activations at run time too: close, not equal
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.detach().flatten(), dim=0))


def _export(model, tmp_path):
    torch.manual_seed(0)
    model.eval()
    quantize_(model, QuantConfig(bits=8))
    ids = torch.randint(0, 50, (1, 12))
    return export_onnx(model, tmp_path / "m.onnx", inputs={"input_ids": ids}), model


def test_a_graph_bound_to_its_traced_length_declares_it(tmp_path):
    # the file declared a dynamic "seq" axis and answered 12x instead of 6x at six tokens, silently
    path, model = _export(LengthBound(), tmp_path)
    assert export_info(path)["seq_len_fixed"] == 12
    f = OnnxModel(path)
    x = torch.randint(0, 50, (2, 12))
    assert _cos(f(input_ids=x).last_hidden_state, model(input_ids=x)) > 0.999
    with pytest.raises(SparsaError, match="does not run on inputs"):
        f(input_ids=x[:, :6])


def test_a_graph_taking_any_length_keeps_its_dynamic_axis(tmp_path):
    path, model = _export(AnyLength(), tmp_path)
    assert export_info(path)["seq_len_fixed"] is None
    x = torch.randint(0, 50, (2, 5))
    assert _cos(OnnxModel(path)(input_ids=x).last_hidden_state, model(input_ids=x)) > 0.999


def test_float_noise_between_runtimes_does_not_pin_the_length(tmp_path):
    """ORT and PyTorch differ by float rounding, far beyond a per-element tolerance on elements near zero
    (MiniLM with SmoothQuant: 5e-4 on outputs of 2.6, 1.35x of the smallest element's size). That pinned the
    demo's file to 128 tokens, padding every sentence (held-out cosine 0.9971 -> 0.9944). A factor is a bound."""
    from onnx import TensorProto, helper, save

    from sparsa.quant.export_lengths import length_bound

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "seq", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = tmp_path / "id.onnx"
    save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    x = torch.randn(1, 6, 8, generator=torch.Generator().manual_seed(0))
    x[0, 0, 0] = 1e-4  # an element near zero: rounding noise is larger than it
    noise = 5e-4 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    assert not length_bound(path, {"x": x}, x + noise)
    assert length_bound(path, {"x": x}, 2 * x)
