"""What data a model takes, as plain options for `sparsa.data.load_dataset`: its image size, channels,
frame count and tubelet (from the HF config, or a plain module's `input_shape`) and the normalisation
its image processor states (`preprocessor_config.json` in the model folder, kept in the model's
record so pruned/quantized copies keep it). Plain values only: data and models do not import each other."""

from __future__ import annotations

import json
from pathlib import Path

PREPROCESSOR = "preprocessor_config.json"


def input_config(config):
    """The config that states the input size: `config`, or its `vision_config` where only that one
    does (a composite config: SigLIP's / CLIP's image classifiers)."""
    if config is None or getattr(config, "image_size", None) is not None:
        return config
    sub = getattr(config, "vision_config", None)
    return sub if getattr(sub, "image_size", None) is not None else config


def config_input_options(config, input_shape, modality: str) -> dict:
    """{image_size, channels[, frames, tubelet, layout]} from an HF config or a plain module's
    per-sample `input_shape` ((C, H, W) images; (C, T, H, W) clips for Conv3d nets)."""
    if modality not in ("image", "video"):
        return {}
    config = input_config(config)
    if config is not None and getattr(config, "image_size", None) is not None:
        s = config.image_size
        opts = {"image_size": [int(s), int(s)] if isinstance(s, int) else [int(v) for v in s][:2],
                "channels": int(getattr(config, "num_channels", 3) or 3)}
        if modality == "video":
            if getattr(config, "num_frames", None):
                opts["frames"] = int(config.num_frames)
            if getattr(config, "tubelet_size", None):
                t = config.tubelet_size  # ViViT states (t, h, w)
                opts["tubelet"] = int(t[0] if isinstance(t, (list, tuple)) else t)
        return opts
    if input_shape:
        shape = [int(v) for v in input_shape]
        if modality == "image" and len(shape) == 3:
            return {"channels": shape[0], "image_size": shape[1:]}
        if modality == "video" and len(shape) == 4:
            return {"channels": shape[0], "frames": shape[1], "image_size": shape[2:], "layout": "CTHW"}
    return {}


def read_preprocessor(folder: Path) -> dict:
    """{"mean": [...], "std": [...]} from an HF `preprocessor_config.json` beside the weights ({} when
    there is none, or it states no normalisation; only numbers are taken from it)."""
    path = Path(folder) / PREPROCESSOR
    if not path.is_file():
        return {}
    try:
        cfg = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}  # CHOICE: an unreadable processor file falls back to the defaults rather than blocking the model
    if not isinstance(cfg, dict) or cfg.get("do_normalize") is False:
        return {}
    out = {}
    for key, name in (("image_mean", "mean"), ("image_std", "std")):
        v = cfg.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = [v]
        if isinstance(v, list) and 0 < len(v) <= 4 and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in v):
            out[name] = [float(a) for a in v]
    return out if len(out) == 2 else {}
