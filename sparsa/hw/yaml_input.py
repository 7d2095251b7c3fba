"""YAML for the simulator's inputs (architecture presets, shape workloads), read with bounds.

`yaml.safe_load` shares aliased nodes, so an alias bomb costs little to load, but anything that
walks the result (validation, error messages, JSON output) pays for the full expansion. The
document is composed first and refused when its aliases expand past `MAX_NODES` nodes, or when
it nests deeper than the parser's recursion allows.
"""

from __future__ import annotations

from typing import Any

import yaml

from sparsa.errors import SparsaError

MAX_NODES = 100_000  # presets and shape files have tens of nodes; per-layer lists a few thousand
MAX_MESSAGE = 300


def _expanded_size(root: yaml.Node) -> int:
    """Nodes of the document with every alias expanded (MAX_NODES + 1 once past it, or for a node
    that contains itself), in one depth-first pass over the distinct nodes."""
    size: dict[int, int] = {}
    open_: set[int] = set()  # nodes whose children are being counted: the current path
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in size:
            continue
        if isinstance(node, yaml.MappingNode):
            kids = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            kids = list(node.value)
        else:
            kids = []
        if children_done or not kids:
            open_.discard(id(node))
            size[id(node)] = 1 + sum(size[id(k)] for k in kids)
            if size[id(node)] > MAX_NODES:
                return MAX_NODES + 1
            continue
        if any(id(k) in open_ or k is node for k in kids):
            return MAX_NODES + 1  # a recursive alias: the expansion never ends
        open_.add(id(node))
        stack.append((node, True))
        stack.extend((k, False) for k in kids if id(k) not in size)
    return size[id(root)]


def load_yaml(text: str, origin: str) -> Any:
    """The YAML document in `text` as plain Python data, or a `SparsaError` naming `origin`."""
    hint = "check the file's indentation and syntax"
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is None:
            return None
        n = _expanded_size(root)
        if n > MAX_NODES:
            raise SparsaError(f"{origin}: the YAML document expands to more than {MAX_NODES:,} nodes (aliases)",
                              hint="write the values out instead of nesting aliases (&name / *name)")
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SparsaError(f"{origin}: not valid YAML ({str(e)[:MAX_MESSAGE]})", hint=hint) from None
    except RecursionError:
        raise SparsaError(f"{origin}: the YAML document nests too deeply", hint=hint) from None
