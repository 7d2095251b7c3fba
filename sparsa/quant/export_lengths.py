"""Whether an exported graph really takes other sequence lengths than the one it was traced at.

The TorchScript exporter records Python ints taken from a tensor's shape as constants (Funnel's
relative-position tables, a model's `int(x.shape[1])`): the file then declares a dynamic sequence
axis, yet fails or computes something else at any other length. `length_bound` runs the float
graph at a shorter length against PyTorch; where they disagree, `pin_sequence` declares the axis
fixed, so ONNX Runtime (and `OnnxModel`) refuse other lengths instead of answering wrongly.
"""

from __future__ import annotations

import torch


def _sequence_inputs(dynamic: dict) -> list[str]:
    return [n for n, axes in dynamic.items() if axes.get(1) == "seq"]


def traced_length(inputs: dict, dynamic: dict) -> int | None:
    """The sequence length the graph is traced at (the axis named "seq"), or None without such an axis."""
    seq = _sequence_inputs(dynamic)
    return int(inputs[seq[0]].shape[1]) if seq else None


def shorter_inputs(inputs: dict, dynamic: dict) -> dict | None:
    """`inputs` cut to half their sequence length (the axis named "seq"), or None without such an axis."""
    length = traced_length(inputs, dynamic)
    if length is None or length < 2:
        return None
    seq = _sequence_inputs(dynamic)
    return {n: (t[:, : length // 2] if n in seq else t) for n, t in inputs.items()}


def reference(wrapper, names: list[str], short: dict | None):
    """The float model's output on the shorter inputs; None where the model itself does not take them
    (a model of one length: nothing to check then)."""
    if short is None:
        return None
    try:
        with torch.no_grad():
            return wrapper(*(short[n] for n in names)).detach().clone()
    except Exception:  # noqa: BLE001 - any failure of the model's own code means "not a length it takes"
        return None


def length_bound(path, short: dict, want: torch.Tensor) -> bool:
    """Whether the float ONNX graph at `path` fails or differs from PyTorch on the shorter inputs."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        got = torch.from_numpy(sess.run(None, {i.name: short[i.name].numpy() for i in sess.get_inputs()})[0])
    except Exception:  # noqa: BLE001 - ONNX Runtime's own failure at this length is the answer
        return True
    if got.shape != want.shape:
        return True
    return relative_error(got, want) > AGREE


# ORT and PyTorch order their float sums differently: a model with large activations (SmoothQuant folded into
# its LayerNorms, before the Mul export adds back) differs by ~1e-4 of the output's norm, single elements by
# far more of their own size. A length held as a constant answers wrongly by a whole factor, or fails.
AGREE = 1e-2


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want|| / ||want|| (the output as a whole, not element by element)."""
    got, want = got.double(), want.double()
    return float((got - want).norm() / want.norm().clamp_min(1e-30))


def pin_sequence(proto, length: int) -> None:
    """Declare every input's and output's "seq" axis as `length`."""
    for v in list(proto.graph.input) + list(proto.graph.output):
        for d in v.type.tensor_type.shape.dim:
            if d.dim_param == "seq":
                d.dim_value = length
