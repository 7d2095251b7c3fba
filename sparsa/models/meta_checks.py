"""Checks of a model folder's sparsa.json before anything is built from it.

A hand-edited or corrupt sparsa.json should fail with the file, the field and the type expected,
not with whatever a constructor raises three calls later.
"""

from __future__ import annotations

import inspect
import types
import typing
from pathlib import Path
from typing import Any

from sparsa.errors import SparsaError
from sparsa.models.resize import is_technique_layer, module_shape

_HINT = "re-create the model folder (e.g. re-run `sparsa prune`), or fix the field by hand"


def _fail(path: Path, field: str, expected: str, got: Any) -> SparsaError:
    shown = repr(got)
    shown = shown if len(shown) <= 80 else shown[:80] + "…"
    return SparsaError(f"{path}: {field} must be {expected}, got {shown} ({type(got).__name__})", hint=_HINT)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _module_path(v: Any) -> bool:
    # dotted attribute names: "encoder.layer.0.attention" ("" is the model itself)
    return isinstance(v, str) and (v == "" or all(p.isidentifier() or p.isdigit() for p in v.split(".")))


def check_sparsa_meta(meta: dict, path: Path) -> None:
    """The structure and types of sparsa.json (everything `_load_sparsa` reads)."""
    if meta.get("kind") not in ("hf", "module"):
        raise _fail(path, "kind", '"hf" or "module"', meta.get("kind"))
    if not isinstance(meta.get("class"), str) or not meta["class"]:
        raise _fail(path, "class", "a class name", meta.get("class"))
    if not _is_int(meta.get("version", 0)) or meta.get("version", 0) < 0:
        raise _fail(path, "version", "a non-negative integer", meta.get("version"))
    for key in ("init_kwargs", "shapes", "attrs", "params", "tied", "record"):
        if key in meta and not isinstance(meta[key], dict):
            raise _fail(path, key, "a JSON object", meta[key])
    if any(not isinstance(k, str) or not k.isidentifier() for k in meta.get("init_kwargs", {})):
        bad = next(k for k in meta["init_kwargs"] if not k.isidentifier())
        raise _fail(path, "init_kwargs", "keyed by argument names", bad)
    shape = meta.get("input_shape")
    if shape is not None and not (isinstance(shape, list) and shape and all(_is_int(x) and x >= 1 for x in shape)):
        raise _fail(path, "input_shape", "a list of positive integers", shape)
    for mod, spec in meta.get("shapes", {}).items():
        if not _module_path(mod):
            raise _fail(path, "a key of shapes", "a module path", mod)
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
            raise _fail(path, f"shapes[{mod!r}]", 'an object with a "type"', spec)
        for k, v in spec.items():
            if _is_int(v) and v < 0:
                raise _fail(path, f"shapes[{mod!r}].{k}", "a non-negative integer", v)
    for mod, values in meta.get("attrs", {}).items():
        if not _module_path(mod):
            raise _fail(path, "a key of attrs", "a module path", mod)
        if not isinstance(values, dict):
            raise _fail(path, f"attrs[{mod!r}]", "an object of attribute values", values)
        for name, v in values.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise _fail(path, f"an attribute name in attrs[{mod!r}]", "a Python identifier", name)
            if not (_is_int(v) and v >= 0):
                raise _fail(path, f"attrs[{mod!r}].{name}", "a non-negative integer", v)
    attrs = meta.get("model_attrs", {})
    if not isinstance(attrs, dict):
        raise _fail(path, "model_attrs", "a JSON object", attrs)
    for name in attrs:  # only sparsa's own marker attributes are set on the rebuilt model
        if not (isinstance(name, str) and name.startswith("_sparsa_") and name.isidentifier()):
            raise _fail(path, "a key of model_attrs", "an attribute name starting with _sparsa_", name)
    for p, shape in meta.get("params", {}).items():
        if not _module_path(p) or not p:
            raise _fail(path, "a key of params", "a parameter path", p)
        if not (isinstance(shape, list) and all(_is_int(x) and x >= 0 for x in shape)):
            raise _fail(path, f"params[{p!r}]", "a list of non-negative integers", shape)
    for alias, target in meta.get("tied", {}).items():
        if not isinstance(target, str) or not target:
            raise _fail(path, f"tied[{alias!r}]", "the name of a stored tensor", target)


def check_paths_exist(model, meta: dict, path: Path) -> None:
    """shapes, params and attrs must name what the model has; attrs may only change attributes the
    module already has (a new attribute would change nothing, silently)."""
    shapes = meta.get("shapes", {})
    # sparsa's decomposed layers replace what the constructor built there, children included
    made = [m for m, spec in shapes.items() if is_technique_layer(spec["type"])]
    for mod, spec in shapes.items():
        if is_technique_layer(spec["type"]) or any(mod.startswith(f"{m}.") or not m for m in made):
            continue
        try:
            target = model.get_submodule(mod)
        except AttributeError:
            raise SparsaError(f"{path}: shapes names module {mod!r}, which {type(model).__name__} does not have",
                              hint=_HINT) from None
        # (module_shape names a Linear subclass, e.g. MultiheadAttention's out_proj, "Linear")
        if (module_shape(target) or {}).get("type", type(target).__name__) != spec["type"]:
            raise SparsaError(f"{path}: shapes[{mod!r}] records a {spec['type']}, but the model has a "
                              f"{type(target).__name__} there", hint=_HINT)
    for p in meta.get("params", {}):
        try:
            model.get_parameter(p)
        except AttributeError:
            raise SparsaError(f"{path}: params names {p!r}, which is not a parameter of {type(model).__name__}",
                              hint=_HINT) from None
    for mod, values in meta.get("attrs", {}).items():
        try:
            target = model.get_submodule(mod) if mod else model
        except AttributeError:
            raise SparsaError(f"{path}: attrs names module {mod!r}, which {type(model).__name__} does not have",
                              hint=_HINT) from None
        for name in values:
            if not hasattr(target, name):
                raise SparsaError(f"{path}: attrs[{mod!r}].{name}: {type(target).__name__} has no attribute {name!r}",
                                  hint=_HINT)


def check_init_kwargs(cls: type, kwargs: dict, path: Path) -> None:
    """init_kwargs must be arguments of `cls`'s constructor, of the types it declares."""
    sig = inspect.signature(cls.__init__)
    params = {n: p for n, p in sig.parameters.items() if n != "self"}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # unresolvable annotations: check names only
        hints = {}
    for name, value in kwargs.items():
        if name not in params:
            if takes_any:
                continue
            raise SparsaError(f"{path}: init_kwargs.{name} is not an argument of {cls.__name__} "
                              f"(its arguments: {', '.join(params) or 'none'})", hint=_HINT)
        hint = hints.get(name)
        if hint is not None and not _matches(value, hint):
            raise _fail(path, f"init_kwargs.{name}", f"{_type_name(hint)} (argument of {cls.__name__})", value)
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty
               and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in kwargs]
    if missing:
        raise SparsaError(f"{path}: init_kwargs lacks {', '.join(missing)} (required by {cls.__name__})", hint=_HINT)


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return _is_int(value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple) or hint in (list, tuple):
        return isinstance(value, list)  # JSON has only lists
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True  # a type JSON cannot express: the constructor judges


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))
