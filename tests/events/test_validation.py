"""The compiled schema checks agree with jsonschema on catalogue event data."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plantbus.events.catalogue import Catalogue
from plantbus.events.validation import compile_schema

CATALOGUE = Catalogue.load()
TYPES = [event_type.name for event_type in CATALOGUE]

TRICKY_STRINGS = [
    "",
    " ",
    "WO-1",
    "12.5",
    "12,5",
    "-0",
    "1e5",
    "12\n",
    "\uff10\uff11",
    "1.",
    ".5",
    "2026-03-01T06:00:00Z",
    "2026-03-01T06:00:00+01:00",
    "2026-03-01T06:00Z",
    "2026-13-01T06:00:00Z",
    "2026-03-01T24:00:00Z",
    "2026-03-01T06:00:00Z\n",
    "a\x00b",
    "tab\there",
    "\x85",
    "x" * 129,
    "x" * 2001,
    "ü",
    "123456789012345678",
    "use_as_is",
    "emergency",
    "kg",
]
SCALARS = st.one_of(
    st.sampled_from(TRICKY_STRINGS),
    st.text(max_size=12),
    st.integers(-3, 3),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)


def resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = root["$defs"][schema["$ref"].split("/")[-1]]
    return schema


def example(schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """Build a small valid instance of a catalogue schema."""
    schema = resolve(schema, root)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {
            name: example(sub, root)
            for name, sub in schema.get("properties", {}).items()
        }
    if kind == "array":
        return [example(schema["items"], root)]
    if kind == "integer":
        return max(1, schema.get("minimum", 1))
    if kind == "boolean":
        return True
    description = schema.get("description", "")
    if "timestamp" in description:
        return "2026-03-01T06:00:00Z"
    if "SSCC" in description:
        return "123456789012345678"
    if "decimal" in description or "seconds" in description:
        return "12.5"
    return "P1-X"


def mutate(value: Any, steps: list[int], kind: int, replacement: Any) -> Any:
    """Walk down `steps` into a JSON value and change what is there."""
    if isinstance(value, dict) and value:
        keys = sorted(value)
        key = keys[steps[0] % len(keys)] if steps else keys[0]
        changed = dict(value)
        if len(steps) > 1:
            changed[key] = mutate(value[key], steps[1:], kind, replacement)
        elif kind == 0:
            del changed[key]
        elif kind == 1:
            changed["extra"] = replacement
        else:
            changed[key] = replacement
        return changed
    if isinstance(value, list) and value:
        if len(steps) > 1:
            index = steps[0] % len(value)
            return [
                mutate(item, steps[1:], kind, replacement) if i == index else item
                for i, item in enumerate(value)
            ]
        if kind == 0:
            return []
        return [*value, replacement]
    return replacement


@pytest.mark.parametrize("event_type", TYPES)
def test_compile_schema_covers_catalogue_type(event_type: str) -> None:
    schema = CATALOGUE.get(event_type).schema  # type: ignore[union-attr]
    check = compile_schema(schema)

    assert check is not None
    assert check(example(schema, schema)) is True


@settings(max_examples=3000, deadline=None)
@given(
    st.sampled_from(TYPES),
    st.lists(st.integers(0, 20), max_size=4),
    st.integers(0, 3),
    SCALARS,
)
def test_compiled_check_agrees_with_jsonschema(
    event_type: str, steps: list[int], kind: int, replacement: Any
) -> None:
    schema = CATALOGUE.get(event_type).schema  # type: ignore[union-attr]
    check = compile_schema(schema)
    assert check is not None
    data = mutate(example(schema, schema), steps, kind, replacement)

    expected = jsonschema.Draft202012Validator(schema).is_valid(data)

    assert check(data) is expected, data
