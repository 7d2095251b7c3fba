"""How many calibration samples the least-squares refit (`recover.lstsq_refit`) can afford on a model.

The refit solves one output projection at a time, and for each it runs both the pruned and the
dense model from the input up to that projection on every calibration batch: its forward work
grows with the number of refit layers times the depth (1.93 G multiply-adds per token on
BERT-base, 15x MiniLM's 0.13 G). A fixed sample count therefore costs 15x more on BERT-base than
on MiniLM (454 CPU s for 256 samples). The refit gets a budget in
multiply-adds instead; the samples it uses are the first ones that fit, never more than asked for.
"""

from __future__ import annotations

from torch import nn

# Multiply-adds one refit may spend. The default recipe's refit (256 fortunes at seq 64, 12,064
# padded tokens) costs 1.56 T on MiniLM (0.13 G per token): it fits whole, so its result is unchanged.
# On BERT-base (1.93 G per token) all 256 would cost 23.3 T; it gets the first 50 (3.97 T).
REFIT_BUDGET_MACS = 4e12
MIN_SAMPLES = 8  # a refit on fewer samples than this is mostly the ridge term: spend them anyway


def _prefix_macs(model: nn.Module) -> dict[str, int]:
    """Per Linear path: the multiply-adds per token of every Linear registered up to and including it
    (HF encoders register their modules in forward order; attention scores, norms and activations
    are a few percent at the refit's sequence lengths and are left out)."""
    out, total = {}, 0
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            total += m.in_features * m.out_features
            out[name] = total
    return out


def macs_per_token(pruned: nn.Module, dense: nn.Module, jobs: list[str]) -> int:
    """Multiply-adds the refit spends per calibration token: for each refit layer, both models'
    forward up to it, plus the float64 normal-equation update (d_in+1)² + (d_in+1)·d_out."""
    pp, dp = _prefix_macs(pruned), _prefix_macs(dense)
    total = 0
    for path in jobs:
        lin = pruned.get_submodule(path)
        total += pp.get(path, 0) + dp.get(path, 0) + (lin.in_features + 1) * (lin.in_features + 1 + lin.out_features)
    return total


def batch_size_of(inputs: dict) -> int | None:
    """The batch size of a dict of model inputs, or None when they are not all batch-first tensors."""
    import torch

    sizes = {v.shape[0] for v in inputs.values() if isinstance(v, torch.Tensor) and v.dim() > 0}
    if len(sizes) != 1 or not all(isinstance(v, torch.Tensor) for v in inputs.values()):
        return None
    return sizes.pop()


def slice_batch(batch: tuple, k: int) -> tuple:
    """The first k samples of a (inputs, labels, mask) calibration batch."""
    inputs, labels, mask = batch
    return ({n: v[:k] for n, v in inputs.items()}, None if labels is None else labels[:k],
            None if mask is None else mask[:k])
