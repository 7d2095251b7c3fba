"""sparsa.quant: search-clipped symmetric quantization, the seed's baselines, and real integer deployment.

`sparsa.quant.primitives` holds the pure tensor functions (choose_qparams, quantize, dequantize,
fake_quant, ternarize); the model-level verb `quantize_(model, config)` lives in `sparsa.quant.api`.
"""

from sparsa.quant.primitives import (  # noqa: F401
    QParams,
    choose_qparams,
    dequantize,
    fake_quant,
    quantize,
    ternarize,
)
from sparsa.quant.config import QuantConfig  # noqa: E402,F401
from sparsa.quant.modules import QuantLinear  # noqa: E402,F401
from sparsa.quant.api import (  # noqa: E402,F401
    dequantize_model_, float_storage, half_float_storage_, quant_layers, quant_size, quantize_,
)
from sparsa.quant.stage import quantize_loaded  # noqa: E402,F401
from sparsa.quant.store import load_quantized, save_quantized  # noqa: E402,F401  registers QuantLinear for loading
from sparsa.quant.export import export_onnx  # noqa: E402,F401
