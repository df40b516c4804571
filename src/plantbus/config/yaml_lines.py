"""Load YAML while remembering the line of every key, for error messages."""

from __future__ import annotations

from typing import Any

import yaml

Location = tuple[str | int, ...]


class _LineLoader(yaml.SafeLoader):
    """A safe loader that records where each mapping key and list item starts."""


def load_with_lines(text: str) -> tuple[Any, dict[Location, int]]:
    """Parse YAML text; return the data and a map from key path to line number."""
    loader = _LineLoader(text)
    try:
        node = loader.get_single_node()
    finally:
        loader.dispose()
    if node is None:
        return None, {}

    lines: dict[Location, int] = {(): node.start_mark.line + 1}
    _collect(node, (), lines)
    return yaml.load(text, Loader=yaml.SafeLoader), lines


def _collect(node: yaml.Node, path: Location, lines: dict[Location, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            lines[(*path, key)] = key_node.start_mark.line + 1
            _collect(value_node, (*path, key), lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _collect(item, (*path, index), lines)


def line_of(lines: dict[Location, int], path: Location) -> int | None:
    """Return the line of the deepest known prefix of `path`."""
    for end in range(len(path), -1, -1):
        line = lines.get(tuple(path[:end]))
        if line is not None:
            return line
    return None
