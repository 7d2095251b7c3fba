"""sparsa: compress transformer models and measure what the compressed model costs.

Subpackages (see ARCHITECTURE.md):
  models     load models through family adapters (BERT, ViT, Swin, VideoMAE, conv nets)
  prune      structured pruning that physically shrinks, tolerance-driven schedules
  quant      symmetric/asymmetric quantization with searched clipping, ONNX integer export
  attention  HDP dynamic attention pruning (integer golden model), baselines, kernels
  decompose  PENNI kernel decomposition, ESCALATE hybrid quantization
  hw         accelerator presets, workloads, cycle-level simulator, Amaranth RTL
  dse        design-space sweeps (process pool or Ray) with a resumable store
  report     JSON + HTML reports

`sparsa.load(path)` loads any model folder a sparsa command wrote (see docs/models.md).
"""

__version__ = "0.1.0"


def load(name_or_path):
    """Load any model folder (or built-in name) from Python: `sparsa.load("out/q")` -> LoadedModel.

    `sparsa.models.load` rebuilds only the layer kinds whose technique has been imported (models/
    imports no technique); this imports them all first, so PENNI, hybrid and quantized folders load
    too. The imports happen here, not at `import sparsa`, which stays light (no torch)."""
    import sparsa.decompose  # noqa: F401  registers the PENNI / ESCALATE layer kinds
    import sparsa.quant  # noqa: F401  registers QuantLinear
    from sparsa.models import load as load_model

    return load_model(name_or_path)
