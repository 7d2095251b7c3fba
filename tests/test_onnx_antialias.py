"""ONNX export of antialiased resizes (Dinov2-with-registers' position table) and of ops torch cannot export.

Before: `sparsa quantize DINOV2_REG --onnx` died with exit 3 (UnsupportedOperatorError for
`aten::_upsample_bicubic2d_aa`, which torch's TorchScript exporter has no symbolic for).
"""

import numpy as np
import onnx
import pytest
import torch

from sparsa.errors import SparsaError
from sparsa.quant import onnx_trace


class _Resize(torch.nn.Module):
    def __init__(self, size, mode):
        super().__init__()
        self.size, self.mode = size, mode

    def forward(self, x):
        return torch.nn.functional.interpolate(x, size=self.size, mode=self.mode, align_corners=False, antialias=True)


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
@pytest.mark.parametrize("size", [(9, 9), (13, 17), (4, 3)])  # same size, up, down (where antialias acts)
def test_antialiased_resize_exports_and_matches_torch(tmp_path, mode, size):
    import onnxruntime as ort

    m, x = _Resize(size, mode), torch.randn(2, 3, 9, 9)
    path = tmp_path / "r.onnx"
    onnx_trace.export(m, (x,), str(path), input_names=["x"], output_names=["y"])
    onnx_trace.finish_file(path)
    nodes = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Resize"]
    assert [a.i for n in nodes for a in n.attribute if a.name == "antialias"] == [1]
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, m(x).numpy(), atol=1e-5)


def test_dinov2_with_registers_exports_to_integer_onnx(tmp_path):
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    from sparsa.models import from_module
    from sparsa.quant import QuantConfig, quantize_
    from sparsa.quant.export import export_onnx, onnx_session

    torch.manual_seed(0)
    cfg = Dinov2WithRegistersConfig(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, mlp_ratio=2, num_register_tokens=2)
    q = from_module(Dinov2WithRegistersModel(cfg).eval())
    quantize_(q, QuantConfig(bits=8, activations="dynamic", act_scheme="asym"))
    p = export_onnx(q, tmp_path / "m.onnx")
    inputs = q.example_inputs(batch=1)
    with torch.no_grad():
        want = q.model(**inputs).last_hidden_state.numpy()
    got = onnx_session(p, threads=1).run(None, {k: v.numpy() for k, v in inputs.items()})[0]
    cos = float((got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want))
    assert cos > 0.999


def test_an_op_the_exporter_lacks_is_a_sparsa_error(tmp_path):
    class Bessel(torch.nn.Module):
        def forward(self, x):
            return torch.special.i0(x)

    with pytest.raises(SparsaError, match="aten::i0"):
        onnx_trace.export(Bessel(), (torch.randn(2, 3),), str(tmp_path / "b.onnx"), input_names=["x"])
