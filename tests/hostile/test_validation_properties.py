"""Hostile event data: the catalogue accepts it or raises SchemaError, nothing else.

tests/events/test_validation.py checks that the compiled checks agree with
jsonschema on mutated valid data. This module feeds any JSON value, also
where an object is expected, and checks the error that the catalogue raises.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from plantbus.errors import SchemaError
from plantbus.events.catalogue import Catalogue
from plantbus.events.envelope import Event
from tests.hostile.properties import PROPERTY_SETTINGS, bounded

CATALOGUE = Catalogue.load()
TYPES = [event_type.name for event_type in CATALOGUE]
FIELD_NAMES = sorted(
    {
        name
        for event_type in CATALOGUE
        for name in event_type.schema.get("properties", {})
    }
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(["12.5", "2026-03-01T06:00:00Z", "2026-02-30T06:00:00Z", "kg"]),
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from([*FIELD_NAMES, "value", "unit"]), st.text()),
            children,
            max_size=5,
        ),
    ),
    max_leaves=20,
)


@PROPERTY_SETTINGS
@given(event_type=st.sampled_from(TYPES), data=JSON)
def test_catalogue_validate_any_json_data(event_type: str, data: Any) -> None:
    event = Event(id="e-1", source="hostile", type=event_type, data=data)

    with bounded():
        try:
            CATALOGUE.validate(event)
        except SchemaError as exc:
            assert exc.violations, "a SchemaError lists no violation"
            assert str(exc).strip()
            return
    assert isinstance(data, dict)
    assert event.dataschema is not None
