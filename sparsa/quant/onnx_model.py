"""An exported ONNX file behind the call sparsa's quality metrics make (`model(**inputs)`), so the file a
user deploys is measured with the same code, data and batches as the PyTorch model it came from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sparsa.errors import SparsaError


class OnnxModel:
    """`OnnxModel(path, adapter)(**inputs)` runs the file in ONNX Runtime (`onnx_session`: the file's own
    CPU check) and returns its output as a Hugging Face output: `last_hidden_state` for a backbone's
    [batch, tokens/patches, ...] output, `logits` for a classifier's [batch, classes]. `adapter`: the
    LoadedModel's, which names the input images and video come in (the metrics read it)."""

    def __init__(self, path, adapter=None, threads: int = 2, spinning: bool = False):
        from sparsa.quant.export import onnx_session

        self.path = Path(path)
        self.adapter = adapter
        self.session = onnx_session(self.path, threads=threads, spinning=spinning)
        declared = self.session.get_inputs()
        self.input_names = [i.name for i in declared]
        self._dtypes = {i.name: _DTYPES.get(i.type) for i in declared}
        self._shapes = {i.name: i.shape for i in declared}  # symbolic axes are names, fixed ones lengths

    def feed(self, inputs: dict) -> dict:
        """The file's inputs from keyword tensors (extra keys, e.g. a tokenizer's token_type_ids, dropped)."""
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise SparsaError(f"{self.path.name} takes {self.input_names}, and {missing} were not given",
                              hint="export the file from this model (sparsa quantize --onnx) again")
        return {n: _array(inputs[n], self._dtypes[n]) for n in self.input_names}

    def __call__(self, **inputs):
        from transformers.modeling_outputs import BaseModelOutput, SequenceClassifierOutput

        feed = self.feed(inputs)
        given = {k: list(v.shape) for k, v in feed.items()}
        if any(_clashes(given[n], self._shapes[n]) for n in feed):  # a fixed axis of another length, or another rank
            raise self._size_error(given)
        try:
            y = torch.from_numpy(self.session.run(None, feed)[0])
        except Exception as e:
            # a length only the graph's inner shapes pin (a Swin's window grid, a Reshape of the exported
            # size) surfaces as ONNX Runtime's INVALID_ARGUMENT / a shape error; anything else (memory, a
            # kernel's own failure) is not the inputs' size and is not called so
            if type(e).__name__ == "InvalidArgument" or "shape" in str(e).lower():
                raise self._size_error(given, f" ({type(e).__name__})") from e
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SparsaError(f"ONNX Runtime failed running {self.path.name} on inputs {given}: {first[:300]}",
                              hint="if the machine ran short of memory, free some or evaluate fewer samples "
                                   "(--samples); otherwise export the file again with this sparsa and ONNX Runtime") from e
        return SequenceClassifierOutput(logits=y) if y.dim() == 2 else BaseModelOutput(last_hidden_state=y)

    def _size_error(self, given: dict, cause: str = "") -> SparsaError:
        return SparsaError(f"{self.path.name} does not run on inputs {given}: it was exported for {self._shapes}{cause}",
                           hint="measure it at the size it was exported for (drop --image-size / --frames), or export "
                                "the model again at this size")


def _clashes(shape: list[int], declared: list) -> bool:
    """Whether an input's shape contradicts the file's declaration (symbolic axes such as 'batch' take any
    length; a declared fixed length must match; so must the rank)."""
    if len(shape) != len(declared):
        return True
    return any(isinstance(d, int) and d > 0 and d != n for n, d in zip(shape, declared))


_DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32,
           "tensor(float16)": np.float16, "tensor(bool)": np.bool_}


def _array(v, dtype) -> np.ndarray:
    """A tensor as the array type the file's input declares (a tokenizer's int64 ids for an int32 input)."""
    a = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
    return a.astype(dtype, copy=False) if dtype is not None else a
