"""Faster stand-ins for pure-Python loops in Hugging Face model constructors, with identical results.

VideoMAE builds its sinusoid position table one Python float at a time: 1,568 × 768 `np.power` calls,
~1.3 s per build at 16×224², paid twice by `sparsa` (the meta-device size check, then the load).
The stand-in makes the same float64 divisions as arrays (the 768 distinct denominators are still the
same scalar `np.power` calls), then the same `np.sin`/`np.cos`, so the table is bit-identical
(`tests/test_hf_fast_init.py` compares it with the original).
"""

from __future__ import annotations

import contextlib
import sys

import numpy as np
import torch


def sinusoid_encoding_table(n_position: int, d_hid: int) -> torch.Tensor:
    denom = np.array([np.power(10000, 2 * (hid_j // 2) / d_hid) for hid_j in range(d_hid)])
    table = np.arange(n_position, dtype=np.float64)[:, None] / denom[None, :]
    table[:, 0::2] = np.sin(table[:, 0::2])  # dim 2i
    table[:, 1::2] = np.cos(table[:, 1::2])  # dim 2i+1
    return torch.FloatTensor(table).unsqueeze(0)


# module -> (attribute, stand-in); a module not yet imported is left alone (the class about to be
# built imported its own module already)
_STAND_INS = {"transformers.models.videomae.modeling_videomae": ("get_sinusoid_encoding_table", sinusoid_encoding_table)}


@contextlib.contextmanager
def fast_hf_init():
    """Within the block, the HF constructors listed above use the stand-ins; restored afterwards."""
    saved = []
    for mod_name, (attr, fn) in _STAND_INS.items():
        mod = sys.modules.get(mod_name)
        if mod is not None and hasattr(mod, attr):
            saved.append((mod, attr, getattr(mod, attr)))
            setattr(mod, attr, fn)
    try:
        yield
    finally:
        for mod, attr, original in saved:
            setattr(mod, attr, original)
