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
"""

__version__ = "0.1.0"
