"""`LoadedModel`: a model plus what sparsa knows about it (family adapter, tokenizer, record)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from torch import nn

from sparsa.models.families import FamilyAdapter

# the model-folder writer: `sparsa.models.store` (which builds on this class) installs `save_model` here,
# so that this module does not import it back; importing any sparsa.models module imports store first
_folder_writer: Callable | None = None


@dataclass
class LoadedModel:
    model: nn.Module  # eval mode
    family: str  # "bert" | "vit" | "swin" | "videomae" | "conv" | a registered family
    adapter: FamilyAdapter
    tokenizer: Any = None  # text models, else None
    config: Any = None  # HF config, or a dict for plain modules
    # what was done to the model: {"source": name/path of the dense original, "stages": [...]}
    record: dict = field(default_factory=dict)
    # the user's data-size override (--image-size / --frames): how data is prepared, never saved
    data_size: dict = field(default_factory=dict)

    @property
    def modality(self) -> str:
        return self.adapter.modality

    def example_inputs(self, batch: int = 1, seq_len: int | None = None) -> dict:
        """Keyword arguments for `model(**inputs)` (deterministic, seed 0). Text models: `seq_len`
        tokens (default 128, or the model's position limit if shorter). Image and video models: at the
        `data_size` override where one is set, so MACs and latency are counted at the size the data has."""
        inputs = self.adapter.example_inputs(batch=batch, seq_len=seq_len)
        size = {k: v for k, v in self.data_size.items() if v is not None}
        if size and self.modality in ("image", "video"):
            time_dim = 2 if self.data_options().get("layout") == "CTHW" else 1  # Conv3d clips: [B, C, T, H, W]
            inputs = {k: _resized(v, size.get("image_size"), size.get("frames"), time_dim) for k, v in inputs.items()}
        return inputs

    def data_options(self) -> dict:
        """The input format data must come in, as options for `sparsa.data.load_dataset`: the model's
        image size, channels, frames and tubelet, its image processor's normalisation, then `data_size`."""
        from sparsa.models.input_spec import config_input_options

        cfg = self.config if hasattr(self.config, "model_type") else None
        opts = config_input_options(cfg, getattr(self.model, "input_shape", None), self.modality)
        opts.update((self.record or {}).get("preprocess") or {})
        opts.update({k: v for k, v in self.data_size.items() if v is not None})
        return opts

    def save(self, directory: str | Path, *, overwrite: bool = False, result: dict | None = None) -> Path:
        """Save weights (safetensors), config, tokenizer and record as a whole folder (an existing
        non-empty one only with `overwrite`, which replaces it); `sparsa.models.load` reloads it.
        `result`: what the command measured, written inside as result.json."""
        return _folder_writer(self, directory, overwrite=overwrite, result=result)

    def clone(self) -> "LoadedModel":
        """A deep copy whose model can be changed without touching this one."""
        model = copy.deepcopy(self.model)
        # an HF model carries its config: keep the copy's config the copy's own
        config = model.config if hasattr(getattr(model, "config", None), "model_type") else copy.deepcopy(self.config)
        adapter = type(self.adapter)(model, config)
        return LoadedModel(model, self.family, adapter, self.tokenizer, config, copy.deepcopy(self.record),
                           dict(self.data_size))

    def describe(self) -> dict:
        return {"family": self.family, "modality": self.modality, **self.adapter.describe()}


def _resized(t, image_size: int | None, frames: int | None, time_dim: int = 1):
    """A float image [B, C, H, W] or clip ([B, T, C, H, W], or [B, C, T, H, W] with time_dim 2) input drawn
    again (seed 0) at the override's size; anything else as it is."""
    import torch

    if not (isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim() in (4, 5)):
        return t
    shape = list(t.shape)
    if image_size is not None:
        shape[-2:] = [image_size, image_size]
    if frames is not None and t.dim() == 5:
        shape[time_dim] = frames
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=t.dtype)
