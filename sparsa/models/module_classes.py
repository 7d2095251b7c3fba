"""The plain nn.Module classes a model folder may name (`sparsa.json` "class"), looked up by name.

A folder records its class as "module.Qualname"; loading builds only a class registered under that
name, so nothing a folder says is ever imported. The zoo registers its classes when it is imported
(`sparsa.models` imports it); a user's own class registers with `register_module_class(cls)`.
"""

from __future__ import annotations

from torch import nn

from sparsa.errors import SparsaError

_CLASSES: dict[str, type] = {}


def class_name(cls: type) -> str:
    """The name a folder records for `cls`."""
    return f"{cls.__module__}.{cls.__qualname__}"


def register_module_class(cls: type) -> type:
    """Let `load` rebuild `cls` (a plain nn.Module with `init_kwargs`) from a folder that names it.
    Usable as a class decorator."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise SparsaError(f"{cls!r} is not an nn.Module class", hint="register the model's class")
    _CLASSES[class_name(cls)] = cls
    return cls


def module_class(name: str) -> type:
    """The registered class a folder names, or a clear error listing the known ones."""
    cls = _CLASSES.get(name) if isinstance(name, str) else None
    if cls is None:
        known = ", ".join(sorted(_CLASSES)) or "none"
        raise SparsaError(f"refusing to build {name!r}: it is not a registered model class (known: {known})",
                          hint="call sparsa.models.register_module_class(YourClass) before load()")
    return cls
