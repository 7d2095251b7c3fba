"""The fortunes distillation text: parsed into prose sentences, deterministic, split disjointly,
never holding an evaluation sentence, and a clear error when the package's files are missing."""

from __future__ import annotations

import pytest

from sparsa.data import load_dataset
from sparsa.data.corpus import normalize
from sparsa.data.fortunes import FORTUNE_FILES, fortune_sentences, sentences_from_record
from sparsa.data.text import EVAL_SENTENCES
from sparsa.errors import SparsaError


def _write(root, records_by_file):
    for name in FORTUNE_FILES:
        (root / name).write_text("\n%\n".join(records_by_file.get(name, ["Nothing to see here at all."])) + "\n%\n")


def test_record_parsing_drops_attribution_numbering_and_non_prose():
    rec = ("(1)\tAnyone can make a decision given enough facts.\n(2)\tA good manager can decide without\n"
           "\tenough facts.\n\t\t-- Murphy's Laws\nThis line is after the attribution and dropped.")
    assert sentences_from_record(rec) == ["Anyone can make a decision given enough facts.",
                                          "A good manager can decide without enough facts."]
    assert sentences_from_record("||  ASCII ART  || with pipes everywhere here.") == []
    assert sentences_from_record("too short.") == []


def test_excludes_eval_sentences_and_dedupes(tmp_path):
    ev = EVAL_SENTENCES[0]
    _write(tmp_path, {"fortunes": ["The kettle sang on the old stove all morning.",
                                   "the kettle SANG on the old stove, all morning!",  # same key: deduped
                                   ev.upper(),  # an eval sentence in other case: removed
                                   "Cats are liquid at room temperature, said nobody."]})
    got = fortune_sentences(exclude=[ev], root=tmp_path)
    keys = [normalize(s) for s in got]
    assert normalize(ev) not in keys and len(keys) == len(set(keys))
    assert "The kettle sang on the old stove all morning." in got
    assert fortune_sentences(exclude=[ev], root=tmp_path) == got  # deterministic


def test_missing_files_raise_sparsa_error(tmp_path):
    with pytest.raises(SparsaError, match="missing"):
        fortune_sentences(root=tmp_path)
    (tmp_path / "fortunes").write_text("%\n")
    for name in FORTUNE_FILES[1:]:
        (tmp_path / name).write_text("%\n")
    with pytest.raises(SparsaError, match="no sentences"):
        fortune_sentences(root=tmp_path)


def test_installed_fortunes_split_and_held_out():
    parts = {s: load_dataset("fortunes", s) for s in ("train", "test", "calib")}
    assert len(parts["train"]) > 10_000 and len(parts["test"]) > 500 and len(parts["calib"]) > 500
    keys = {s: {normalize(t) for t in d.texts} for s, d in parts.items()}
    assert not (keys["train"] & keys["test"]) and not (keys["train"] & keys["calib"])
    banned = {normalize(s) for s in EVAL_SENTENCES}
    assert not any(keys[s] & banned for s in keys)
    assert load_dataset("fortunes", "test").texts == parts["test"].texts  # same seed, same order
    assert all(t[0].isupper() and t[-1] in ".!?" for t in parts["test"].texts)
