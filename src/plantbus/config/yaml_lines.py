"""Load YAML while remembering the line of every key, for error messages."""

from __future__ import annotations

from typing import Any

import yaml

Location = tuple[str | int, ...]

# Most values a hub file may expand to, counting each use of an alias again.
# Real hub files have a few hundred; the limit stops alias bombs.
MAX_VALUES = 100_000


class YamlShapeError(ValueError):
    """YAML that parses but cannot be a hub file: duplicate keys, alias loops."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


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
    _collect(node, (), lines, [], [0])
    return yaml.load(text, Loader=yaml.SafeLoader), lines


def _collect(
    node: yaml.Node,
    path: Location,
    lines: dict[Location, int],
    parents: list[yaml.Node],
    count: list[int],
) -> None:
    """Record lines of keys and items; reject duplicate keys and alias loops."""
    count[0] += 1
    if count[0] > MAX_VALUES:
        raise YamlShapeError(
            node.start_mark.line + 1,
            f"the hub file expands to more than {MAX_VALUES:,} values through "
            f"YAML aliases; write the repeated parts out or use fewer aliases",
        )
    if any(parent is node for parent in parents):
        raise YamlShapeError(
            node.start_mark.line + 1,
            "a YAML alias refers to a node that contains it, which never ends",
        )
    parents.append(node)
    if isinstance(node, yaml.MappingNode):
        seen: dict[object, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                dotted = ".".join(str(part) for part in (*path, key))
                raise YamlShapeError(
                    line,
                    f"key `{dotted}` is given twice, here and on line {seen[key]}; "
                    f"YAML would keep only the last one",
                )
            seen[key] = line
            lines[(*path, key)] = line
            _collect(value_node, (*path, key), lines, parents, count)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _collect(item, (*path, index), lines, parents, count)
    parents.pop()


def line_of(lines: dict[Location, int], path: Location) -> int | None:
    """Return the line of the deepest known prefix of `path`."""
    for end in range(len(path), -1, -1):
        line = lines.get(tuple(path[:end]))
        if line is not None:
            return line
    return None
