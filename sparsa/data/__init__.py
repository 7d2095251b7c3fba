"""Offline data sets: `load_dataset(name_or_path, split, seed)`.

Built-in names: `digits` (scikit-learn's bundled 8x8 digits, upsampled to 32x32 RGB), `clips`
(generated moving-shape video, class = motion), `sentences` (held-out evaluation sentences,
test split only), `corpus` (distillation text from installed docstrings, disjoint from
`sentences`), `fortunes` (everyday-English distillation text from the BSD fortune files,
also disjoint from `sentences`). Anything else is a path: a text file (one sentence per line), an image folder
(`class_name/*.png`), or a Hugging Face `datasets.save_to_disk` folder.
"""

from __future__ import annotations

from pathlib import Path

from sparsa.data.dataset import Dataset
from sparsa.data.splits import SPLITS, check_split
from sparsa.errors import SparsaError

BUILTIN = ("digits", "clips", "sentences", "corpus", "fortunes")

__all__ = ["BUILTIN", "SPLITS", "Dataset", "load_dataset"]


def load_dataset(name_or_path: str | Path, split: str = "test", seed: int = 0, **opts) -> Dataset:
    """Load a data set split. `seed` fixes the split and order (built-in sets are deterministic).

    Options: `image_size` (image sets, default 32), `progress` (callable for status lines)."""
    check_split(split)
    name = str(name_or_path)
    if name == "digits":
        from sparsa.data.images import load_digits

        return load_digits(split, seed, **_pick(opts, "image_size"))
    if name == "clips":
        from sparsa.data.video import load_clips

        return load_clips(split, seed, **_pick(opts, "frames", "size", "per_class"))
    if name == "sentences":
        from sparsa.data.textfiles import load_sentences

        return load_sentences(split)
    if name == "corpus":
        from sparsa.data.textfiles import load_corpus

        return load_corpus(split, seed, **_pick(opts, "progress"))
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
    from sparsa.data.hf_disk import is_hf_disk, load_hf_disk

    if is_hf_disk(path):
        return load_hf_disk(path, split, seed, **_pick(opts, "image_size"))
    from sparsa.data.images import load_image_folder

    return load_image_folder(path, split, seed, **_pick(opts, "image_size"))


def _pick(opts: dict, *names: str) -> dict:
    unknown = set(opts) - {"image_size", "frames", "size", "per_class", "progress"}
    if unknown:
        raise SparsaError(f"unknown load_dataset option(s): {sorted(unknown)}",
                          hint="options are image_size (images), frames/size/per_class (clips), progress (corpus)")
    return {k: v for k, v in opts.items() if k in names}
