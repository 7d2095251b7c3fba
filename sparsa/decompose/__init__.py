"""Kernel decomposition: PENNI (basis kernels + sparse coefficients) and ESCALATE's hybrid
8-bit/ternary quantization with its reorganised computation. See docs/penni.md."""

from sparsa.decompose.layers import PenniConv, PenniLinear, set_impl
from sparsa.decompose.penni import (
    PenniConfig,
    accuracy,
    coefficient_sparsity,
    decompose,
    finetune,
    fold_batchnorm,
    l1_penalty,
    merge_to_dense,
    penni,
    prune_coefficients,
    retrain,
    svd_basis,
)
from sparsa.decompose.groups import group_penalty, prune_channels
from sparsa.decompose.shrink import remove_dead_bases, shrink
from sparsa.decompose import escalate as _escalate  # noqa: E402,F401  registers the hybrid layer kinds for loading

__all__ = [
    "PenniConv", "PenniLinear", "set_impl", "PenniConfig", "accuracy", "coefficient_sparsity", "decompose",
    "finetune", "fold_batchnorm", "l1_penalty", "merge_to_dense", "penni", "prune_coefficients", "retrain", "svd_basis",
    "remove_dead_bases", "shrink", "group_penalty", "prune_channels",
]
