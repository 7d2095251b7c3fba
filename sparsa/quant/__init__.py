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
