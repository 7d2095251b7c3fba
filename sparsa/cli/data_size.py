"""`--image-size` / `--frames`: the size images and clips are prepared at, on every command that loads
data. By default data comes at the model's own input size (its config); these override it, e.g. for a
model that takes other sizes (Swin, conv nets) or a cheaper run."""

from __future__ import annotations

from typing import Optional

import typer

from sparsa.cli import checks
from sparsa.data.model_input import MAX_FRAMES, MAX_IMAGE_SIZE, check_format
from sparsa.errors import SparsaError


def image_size_option() -> Optional[int]:
    return typer.Option(None, "--image-size", callback=checks.in_range(1, MAX_IMAGE_SIZE),
                        help="images/clips resized to N x N (default: the model's input size)")


def frames_option() -> Optional[int]:
    return typer.Option(None, "--frames", callback=checks.in_range(1, MAX_FRAMES),
                        help="frames per generated clip (default: the model's num_frames)")


def set_data_size(lm, image_size: int | None, frames: int | None) -> None:
    """Record the override on the LoadedModel (data loaders read it) and check it against the model now,
    before any work: frames must fill whole tubelets; text models take neither option."""
    if image_size is None and frames is None:
        return
    if lm.modality == "text":
        raise SparsaError("--image-size / --frames size images and clips, and this is a text model",
                          hint="drop them (text inputs are sized by --seq-len where a command has it)")
    if frames is not None and lm.modality != "video":
        raise SparsaError(f"--frames sizes video clips, and this model takes {lm.modality} inputs",
                          hint="drop --frames (use --image-size for images)")
    lm.data_size = {"image_size": image_size, "frames": frames}
    check_format(**lm.data_options())
    _check_model_takes_it(lm)


def _check_model_takes_it(lm) -> None:
    """One batch-1 forward at the override's size: a model that takes only its own size (ViT's position
    table, VideoMAE's) is refused here with the shape error, before any work that counts MACs or times
    the model at that size (`LoadedModel.example_inputs` follows the override)."""
    import torch

    from sparsa.metrics.quality import size_errors_as_bad_input

    inputs = lm.example_inputs(batch=1)
    x = next((v for v in inputs.values() if isinstance(v, torch.Tensor) and v.is_floating_point()), None)
    with torch.no_grad(), size_errors_as_bad_input(lm, x):
        lm.model(**inputs)
