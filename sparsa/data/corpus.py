"""Offline distillation text: English sentences taken from the docstrings of the Python
standard library, transformers and torch (installed with sparsa).

CHOICE: installed docstrings. Reason: they are on every machine that runs sparsa (no download),
they are plain technical English close to what an embedding model is used on, and for one
environment they are fixed, so the corpus is reproducible (the cache key names the Python,
transformers and torch versions). The stdlib alone gives ~7.5k sentences, transformers + torch
add ~17k; building takes about a minute of CPU once (`make install` does it). Taking every
installed package gave ~90k but took minutes and changed whenever any package did. The
built-in evaluation sentences (`sparsa.data.text.EVAL_SENTENCES`) are removed from it, so
fidelity is always measured on text the recovery never saw."""

from __future__ import annotations

import ast
import hashlib
import os
import re
import sys
import sysconfig
import zlib
from pathlib import Path

from sparsa.io import atomic_write_text

CORPUS_VERSION = 1
# directories of the stdlib that hold generated text, test fixtures or non-English data
_SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "__pycache__",
              "encodings", "pydoc_data", "turtledemo", "ensurepip", "venv"}
_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_CODEY = re.compile(r"(>>>|::|==|!=|\{|\}|\[|\]|\(\)|\w_\w|\b_|\w\.\w\w|\\|`|\$|#|<|>|\*|=|\||\bself\b|\bNone\b.*\bNone\b)")


def normalize(s: str) -> str:
    """Key for de-duplication and for excluding the evaluation sentences."""
    return re.sub(r"[^a-z0-9]+", " ", s.lower()).strip()


def _docstrings(path: Path):
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield doc


def sentences_from_docstring(doc: str) -> list[str]:
    out = []
    for para in re.split(r"\n\s*\n", doc):
        lines = para.splitlines()
        # indented blocks, doctest and field lists are code or markup, not prose
        if any(l.startswith((" ", "\t", ">>>", ":", "..", "-", "*")) for l in lines):
            continue
        text = " ".join(l.strip() for l in lines)
        for s in _SENT_SPLIT.split(text):
            s = s.strip()
            words = s.split()
            if not (6 <= len(words) <= 40) or not s[0].isupper() or not s.endswith("."):
                continue
            if _CODEY.search(s) or sum(c.isalpha() for c in s) < 0.75 * len(s):
                continue
            out.append(s)
    return out


def build_corpus(roots: list[Path], exclude: list[str] = ()) -> list[str]:
    """Sentences from every .py file under `roots` (sorted walk), de-duplicated, `exclude` removed."""
    banned = {normalize(s) for s in exclude}
    seen: set[str] = set()
    out: list[str] = []
    for root in roots:
        files = [root] if root.is_file() else sorted(
            p for p in root.rglob("*.py") if not (set(p.relative_to(root).parts[:-1]) & _SKIP_DIRS))
        for f in files:
            for doc in _docstrings(f):
                for s in sentences_from_docstring(doc):
                    k = normalize(s)
                    if k in seen or k in banned:
                        continue
                    seen.add(k)
                    out.append(s)
    return out


def split_of(sentence: str) -> str:
    """Stable hash split, 90/5/5 train/test/calib, independent of the file walk order."""
    h = zlib.crc32(normalize(sentence).encode()) % 100
    return "train" if h < 90 else ("test" if h < 95 else "calib")


def cache_dir() -> Path:
    base = os.environ.get("SPARSA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sparsa")
    return Path(base)


# packages whose docstrings join the stdlib's: always installed with sparsa, and pinned or
# slow-moving, so the corpus (and its cache key) does not change whenever any package does
CORPUS_PACKAGES = ("transformers", "torch")


def corpus_roots() -> list[Path]:
    paths = sysconfig.get_paths()
    roots = [Path(paths["stdlib"])]
    for pkg in CORPUS_PACKAGES:
        for lib in dict.fromkeys([paths["purelib"], paths["platlib"]]):
            if lib and (Path(lib) / pkg).is_dir():
                roots.append(Path(lib) / pkg)
                break
    return [r for r in roots if r.is_dir()]


def _environment_key(exclude: list[str]) -> str:
    from importlib.metadata import PackageNotFoundError, version

    vers = []
    for pkg in CORPUS_PACKAGES:
        try:
            vers.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            vers.append(f"{pkg}==absent")
    # absolute paths are left out: another checkout (another venv) reuses the same cache
    blob = "\n".join([sys.version, *vers, "--", *exclude])
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def corpus_sentences(exclude: list[str], progress=None) -> list[str]:
    """The whole corpus (all splits), built once (a few minutes) and cached per environment
    and evaluation set under $SPARSA_CACHE (default ~/.cache/sparsa)."""
    path = cache_dir() / f"corpus-v{CORPUS_VERSION}-{_environment_key(exclude)}.txt"
    if path.is_file():
        return path.read_text(encoding="utf-8").splitlines()
    if progress is not None:
        progress(f"building the distillation corpus from installed docstrings (once) -> {path}")
    sents = build_corpus(corpus_roots(), exclude)
    try:
        atomic_write_text(path, "\n".join(sents) + "\n")
    except OSError:  # read-only home: generate on the fly next time too
        pass
    return sents
