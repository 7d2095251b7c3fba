"""Calibration: run the float model on calibration inputs and keep what each Linear layer sees.

Per layer we keep the exact min/max of its input and a fixed-seed subsample of its values
(at most 2^20, docs/algorithms.md §4) for static activation ranges, and up to `max_rows` input rows (tokens /
patches) for the output-error clipping search.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn

from sparsa.errors import SparsaError

MAX_VALUES = 1 << 20
MAX_ROWS = 1024


class LayerStats:
    def __init__(self, max_values: int = MAX_VALUES, max_rows: int = MAX_ROWS):
        self.lo = float("inf")
        self.hi = float("-inf")
        self.values: list[Tensor] = []
        self.rows: list[Tensor] = []
        self.n_values = 0
        self.n_rows = 0
        self.max_values, self.max_rows = max_values, max_rows
        self.absmax: Tensor | None = None  # per input channel (SmoothQuant)
        self.gen = torch.Generator().manual_seed(0)

    def add(self, x: Tensor) -> None:
        x = x.detach().float()
        self.lo = min(self.lo, float(x.min()))
        self.hi = max(self.hi, float(x.max()))
        am = x.abs().reshape(-1, x.shape[-1]).amax(0)
        self.absmax = am if self.absmax is None else torch.maximum(self.absmax, am)
        flat = x.reshape(-1)
        take = min(flat.numel(), max(1, self.max_values // 8))  # keep later batches represented
        idx = torch.randperm(flat.numel(), generator=self.gen)[:take]
        self.values.append(flat[idx])
        self.n_values += take
        rows = x.reshape(-1, x.shape[-1])
        if self.n_rows < self.max_rows:
            r = rows[torch.randperm(rows.shape[0], generator=self.gen)[: self.max_rows - self.n_rows]]
            self.rows.append(r)
            self.n_rows += r.shape[0]

    def sample(self) -> Tensor:
        """Subsample of the values (≤ 2^20) plus the exact extremes."""
        v = torch.cat(self.values)
        if v.numel() > self.max_values - 2:
            v = v[torch.randperm(v.numel(), generator=torch.Generator().manual_seed(1))[: self.max_values - 2]]
        return torch.cat([v, torch.tensor([self.lo, self.hi])])

    def input_rows(self) -> Tensor:
        return torch.cat(self.rows)


@torch.no_grad()
def collect(model: nn.Module, names: list[str], inputs: Iterable[dict]) -> dict[str, LayerStats]:
    """Run `model(**batch)` for every calibration batch and record the inputs of the named Linears."""
    stats = {n: LayerStats() for n in names}
    handles = []
    for n in names:
        mod = model.get_submodule(n)
        handles.append(mod.register_forward_pre_hook(lambda m, args, n=n: stats[n].add(args[0])))
    count = 0
    try:
        for batch in inputs:
            if not isinstance(batch, dict):
                raise SparsaError(f"calibration batch {count} is a {type(batch).__name__}, not a dict of model inputs",
                                  hint="pass dicts like the ones LoadedModel.example_inputs() returns, or a Dataset")
            try:
                model(**batch)
            except SparsaError:
                raise
            except Exception as e:
                shapes = {k: tuple(v.shape) for k, v in batch.items() if hasattr(v, "shape")}
                raise SparsaError(
                    f"the model rejected calibration batch {count} with shapes {shapes}: {type(e).__name__}: {e}",
                    hint="calibration data must have the model's input shape (e.g. images at the fixture size, "
                         "or texts for a text model)",
                ) from e
            count += 1
    finally:
        for h in handles:
            h.remove()
    if count == 0:
        raise SparsaError("the calibration data is empty", hint="give at least one calibration sample")
    missing = [n for n, s in stats.items() if s.n_values == 0]
    if missing:
        raise SparsaError(f"calibration never reached layers {missing[:3]}", hint="do these layers run in forward()?")
    return stats


def calib_batches(loaded, data, *, n: int = 32, seq_len: int | None = None, batch_size: int = 8) -> list[dict]:
    """Model inputs from calibration data for a LoadedModel.

    data: a sparsa Dataset (text or image/video), a list of strings (text models), a tensor of
    inputs, or a list of ready input dicts. Texts are tokenized one per batch without padding
    (padding would put pad-token activations into the statistics, TOOLCHAIN.md).
    """
    if data is None:
        raise SparsaError("this quantization needs calibration data (static activations or output-error search)",
                          hint="pass calib= a dataset name such as 'corpus' or 'digits', a text file, or a Dataset")
    if isinstance(data, str):
        from sparsa.data import load_dataset

        data = load_dataset(data, split="calib", model=loaded)
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return data
    modality = getattr(loaded, "modality", "text" if getattr(loaded, "tokenizer", None) is not None else "image")
    texts = data if isinstance(data, list) else getattr(data, "texts", None)
    if modality == "text":
        if texts is None or not all(isinstance(t, str) for t in texts):
            raise SparsaError(f"{loaded.family} is a text model but the calibration data is not text ({_describe(data)})",
                              hint="use a text dataset such as 'corpus' or a text file with one sentence per line")
        texts = [t for t in texts if t.strip()][:n]
        if not texts:
            raise SparsaError("the calibration texts are empty", hint="give at least one non-empty sentence")
        tok = loaded.tokenizer
        if tok is None:
            raise SparsaError("calibration texts need the model's tokenizer, and this model has none",
                              hint="load the model from a folder that holds its tokenizer, or pass input dicts")
        if seq_len is None:  # 128 tokens, or the model's position limit if shorter
            adapter = getattr(loaded, "adapter", None)
            seq_len = adapter.default_seq_len() if adapter is not None else 128
        return [dict(tok([t], truncation=True, max_length=seq_len, return_tensors="pt")) for t in texts]
    x = data if isinstance(data, Tensor) else getattr(data, "x", None)
    if x is None:
        raise SparsaError(f"{loaded.family} takes tensors but the calibration data has none ({_describe(data)})",
                          hint="use an image/video dataset such as 'digits' or 'clips'")
    ref = loaded.example_inputs(batch=1)
    name, ex = next(iter(ref.items()))
    if tuple(x.shape[1:]) != tuple(ex.shape[1:]):
        raise SparsaError(
            f"calibration inputs have shape {tuple(x.shape[1:])} per sample, the model expects {tuple(ex.shape[1:])}",
            hint="resize the data to the model's input size, or pick the matching dataset",
        )
    x = x[:n].to(ex.dtype)
    return [{name: x[i : i + batch_size]} for i in range(0, x.shape[0], batch_size)]


def _describe(data) -> str:
    kind = getattr(data, "kind", None)
    return f"kind={kind!r}" if kind else type(data).__name__
