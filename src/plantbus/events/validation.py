"""Compile the JSON Schema subset of the event catalogue into fast Python checks.

The catalogue's schemas use a small part of JSON Schema: objects with
`properties`, `required` and `additionalProperties: false`, strings with
`pattern`, `minLength` and `maxLength`, integers with `minimum`, booleans,
arrays with `items` and `minItems`, `enum`, and `$ref` into `$defs`. A check
compiled from them is a tree of closures that returns valid or invalid in a
few microseconds. A schema that uses any other keyword is not compiled, and
the caller falls back to a general validator. Listing what is wrong is left
to jsonschema, which runs only for data that fails the check.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]

# Keywords that only describe and never constrain.
_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$defs", "title", "description", "x-plantbus", "examples"}
)
_SUPPORTED = _ANNOTATIONS | {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "pattern",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minimum",
    "enum",
    "$ref",
}


class Unsupported(Exception):
    """The schema uses a keyword that this compiler does not handle."""


def compile_schema(schema: dict[str, Any]) -> Check | None:
    """Compile a schema into a check, or return None when it leaves the subset."""
    try:
        return _compile(schema, schema.get("$defs", {}), {})
    except Unsupported:
        return None


def _compile(
    schema: dict[str, Any], definitions: dict[str, Any], compiled: dict[str, Check]
) -> Check:
    unknown = set(schema) - _SUPPORTED
    if unknown:
        raise Unsupported(", ".join(sorted(unknown)))
    if "$ref" in schema:
        if len(set(schema) - _ANNOTATIONS) > 1:
            raise Unsupported("$ref beside other keywords")
        return _reference(schema["$ref"], definitions, compiled)

    kind = schema.get("type")
    if kind == "string" and "enum" not in schema:
        return _string(schema)

    checks: list[Check] = []
    if kind is not None:
        checks.append(_type(kind))
    if "enum" in schema:
        checks.append(_enum(schema["enum"]))
    if {"pattern", "minLength", "maxLength"} & set(schema):
        checks.append(_string(schema, typed=False))
    if "minimum" in schema:
        minimum = schema["minimum"]
        checks.append(lambda value: not _is_number(value) or value >= minimum)
    if {"properties", "required", "additionalProperties"} & set(schema):
        checks.append(_object(schema, definitions, compiled))
    if {"items", "minItems", "maxItems"} & set(schema):
        checks.append(_array(schema, definitions, compiled))
    return _all(checks)


def _all(checks: list[Check]) -> Check:
    if not checks:
        return lambda value: True
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda value: first(value) and second(value)
    rest = _all(checks[1:])
    head = checks[0]
    return lambda value: head(value) and rest(value)


def _reference(
    pointer: str, definitions: dict[str, Any], compiled: dict[str, Check]
) -> Check:
    if not pointer.startswith("#/$defs/") or pointer[8:] not in definitions:
        raise Unsupported(f"$ref {pointer!r}")
    name = pointer[8:]
    if name not in compiled:
        compiled[name] = _compile(definitions[name], definitions, compiled)
    return compiled[name]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type(name: Any) -> Check:
    if name == "object":
        return lambda value: isinstance(value, dict)
    if name == "string":
        return lambda value: isinstance(value, str)
    if name == "boolean":
        return lambda value: isinstance(value, bool)
    if name == "array":
        return lambda value: isinstance(value, list)
    if name == "integer":
        # JSON Schema counts 1.0 as an integer; a boolean is never one.
        return lambda value: (
            _is_number(value) and (isinstance(value, int) or float(value).is_integer())
        )
    if name == "number":
        return _is_number
    raise Unsupported(f"type {name!r}")


def _enum(allowed: list[Any]) -> Check:
    # Compare types too, because Python counts True == 1 and 1 == 1.0.
    pairs = [(type(item), item) for item in allowed]
    return lambda value: any(
        type(value) is kind and value == item for kind, item in pairs
    )


def _string(schema: dict[str, Any], *, typed: bool = True) -> Check:
    """Check the length and pattern of a string; other values pass unless typed."""
    search = _matcher(schema["pattern"]) if "pattern" in schema else None
    shortest = schema.get("minLength", 0)
    longest = schema.get("maxLength", float("inf"))

    def check(value: Any) -> bool:
        if not isinstance(value, str):
            return not typed
        if not shortest <= len(value) <= longest:
            return False
        return search is None or search(value) is not None

    return check


def _matcher(pattern: str) -> Callable[[str], object]:
    """Return a function that finds `pattern` in a string, as JSON Schema does."""
    # An anchored pattern is the common case; fullmatch of its core is the same
    # test and avoids scanning for the anchors.
    for end in ("$(?!\\n)", "$"):
        if pattern.startswith("^") and pattern.endswith(end):
            core = pattern[1 : -len(end)]
            if not core.endswith("\\") and not _top_level_alternation(core):
                return re.compile(f"(?:{core})").fullmatch
    return re.compile(pattern).search


def _top_level_alternation(pattern: str) -> bool:
    """Return True when `pattern` has a `|` outside any group or class."""
    depth = 0
    in_class = escaped = False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            return True
    return False


def _object(
    schema: dict[str, Any], definitions: dict[str, Any], compiled: dict[str, Check]
) -> Check:
    properties = {
        name: _compile(sub, definitions, compiled)
        for name, sub in schema.get("properties", {}).items()
    }
    required = tuple(schema.get("required", ()))
    extra = schema.get("additionalProperties", True)
    if extra is not True and extra is not False:
        raise Unsupported("additionalProperties with a schema")
    closed = extra is False
    allowed = frozenset(properties)

    def check(value: Any) -> bool:
        if not isinstance(value, dict):
            return True
        for name in required:
            if name not in value:
                return False
        if closed and not allowed.issuperset(value):
            return False
        for name, item in value.items():
            check_item = properties.get(name)
            if check_item is not None and not check_item(item):
                return False
        return True

    return check


def _array(
    schema: dict[str, Any], definitions: dict[str, Any], compiled: dict[str, Check]
) -> Check:
    items = schema.get("items")
    if items is not None and not isinstance(items, dict):
        raise Unsupported("items as a list")
    check_item = _compile(items, definitions, compiled) if items is not None else None
    shortest = schema.get("minItems", 0)
    longest = schema.get("maxItems")

    def check(value: Any) -> bool:
        if not isinstance(value, list):
            return True
        if len(value) < shortest or (longest is not None and len(value) > longest):
            return False
        return check_item is None or all(check_item(item) for item in value)

    return check
