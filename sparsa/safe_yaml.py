"""The one YAML reader: safe tags only, a size limit, and no alias bombs.

YAML aliases share one parsed object, so nine nested aliases of nine items each ("billion laughs")
parse instantly into a structure that expands to 10^9 values the moment anything walks it
(validation, deep copies, printing an error). Every YAML file sparsa reads (recipes, presets,
workloads, grids, `--set` values) goes through here, which refuses documents whose aliases add more
than MAX_ALIAS_EXPANSION nodes or refer to themselves.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from sparsa.errors import SparsaError

MAX_YAML_BYTES = 1 << 20  # recipes, presets and grids are a few KB
MAX_ALIAS_EXPANSION = 10_000  # nodes that aliases may add beyond those written in the file


def load_yaml_file(path: str | os.PathLike, what: str = "YAML file") -> Any:
    """Read and parse a YAML file (see `load_yaml_text`)."""
    return load_yaml_text(read_yaml_text(path, what), source=str(path))


def read_yaml_text(path: str | os.PathLike, what: str = "YAML file") -> str:
    """A YAML file's text, refused past MAX_YAML_BYTES before it is read."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_YAML_BYTES:
            raise SparsaError(f"{what} {p} is {size} bytes; sparsa reads YAML files up to {MAX_YAML_BYTES} bytes",
                              hint="is this the right file?")
        return p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SparsaError(f"cannot read {what} {p}: {e}") from None


def load_yaml_text(text: str, source: str = "<yaml>") -> Any:
    """Parse one YAML document with safe tags; bounded in size and alias expansion."""
    return compose_and_load(text, source)[0]


def compose_and_load(text: str, source: str = "<yaml>") -> tuple[Any, yaml.Node | None]:
    """(data, node graph): the node graph carries line numbers for error messages."""
    if len(text) > MAX_YAML_BYTES:
        raise SparsaError(f"{source}: {len(text)} characters of YAML; sparsa reads up to {MAX_YAML_BYTES}")
    try:  # the reader refuses unprintable characters as soon as the loader is made
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as e:
        raise SparsaError(f"{source}: malformed YAML: {_short(e)}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        check_alias_expansion(node, source)
        return loader.construct_document(node), node
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        what = ", ".join(x for x in (e.context, e.problem) if x) or e
        raise SparsaError(f"{where}: malformed YAML: {_short(what)}",
                          hint="check indentation and colons") from None
    except yaml.YAMLError as e:
        raise SparsaError(f"{source}: malformed YAML: {_short(e)}") from None
    except RecursionError:  # the composer recurses once per nesting level
        raise SparsaError(f"{source}: the YAML document nests too deeply",
                          hint="flatten the document; sparsa's files nest a few levels") from None
    finally:
        loader.dispose()


def check_alias_expansion(root: yaml.Node, source: str) -> None:
    """Refuse a node graph whose aliases expand it by more than MAX_ALIAS_EXPANSION nodes, or into a cycle."""
    written: set[int] = set()
    expanded: dict[int, int] = {}  # id(node) -> nodes it stands for once every alias is expanded
    in_progress: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # iterative post-order walk: a deep document must not hit Python's recursion limit
        node, children_done = stack.pop()
        key = id(node)
        written.add(key)
        if children_done:
            in_progress.discard(key)
            expanded[key] = 1 + sum(expanded[id(c)] for c in _children(node))
            continue
        if key in expanded:
            continue
        if key in in_progress:
            raise SparsaError(f"{source}: a YAML alias refers to the node that contains it (a cycle)",
                              hint="write the values out instead of aliasing an enclosing anchor")
        in_progress.add(key)
        stack.append((node, True))
        for c in _children(node):
            if id(c) in in_progress:
                raise SparsaError(f"{source}: a YAML alias refers to the node that contains it (a cycle)",
                                  hint="write the values out instead of aliasing an enclosing anchor")
            if id(c) not in expanded:
                stack.append((c, False))
    total = expanded[id(root)]
    # `written` counts each distinct node once: what the file spells out; the rest comes from aliases
    if total - len(written) > MAX_ALIAS_EXPANSION:
        raise SparsaError(
            f"{source}: YAML aliases expand the document from {len(written)} to {total} values "
            f"(more than {MAX_ALIAS_EXPANSION} added by aliases)",
            hint="write the values out, or alias fewer and smaller anchors",
        )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [n for kv in node.value for n in kv]
    return []


def _short(x: Any, limit: int = 500) -> str:
    s = str(x)
    return s if len(s) <= limit else s[:limit] + f"… ({len(s) - limit} more characters)"
