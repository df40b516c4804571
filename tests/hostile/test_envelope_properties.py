"""Hostile input to the CloudEvents envelope: an Event or an EnvelopeError, no other."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from plantbus.errors import EnvelopeError
from plantbus.events.envelope import Event, parse_time
from tests.hostile.properties import PROPERTY_SETTINGS, bounded, mutated, parse_or_error

CONFORMANCE = "cloudevents/conformance/format/json"
ATTRIBUTES = [
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "data",
    "data_base64",
    "correlationid",
    "causationid",
    "plant",
    "partitionkey",
    "traceparent",
    "myext",
    "Bad-Name",
]
TRICKY_VALUES: list[Any] = [
    None,
    "",
    " ",
    "1.0",
    "0.3",
    "a\x00b",
    "\u0085",
    "x" * 5000,
    "2026-03-01T06:00:00Z",
    "2026-02-30T06:00:00Z",
    "2026-03-01T06:00:00+24:00",
    "2026-03-01T06:00:00.1234567890123Z",
    "99999-01-01T00:00:00Z",
    "text/plain; charset=utf-8",
    "not a media type",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "aGVsbG8=",
    "not base64!",
    0,
    -1,
    2**31,
    2**70,
    1.5,
    float("inf"),
    True,
    [],
    {},
    {"nested": ["list", {"deep": None}]},
]


def _conformance_events(samples_dir: Path) -> list[dict[str, Any]]:
    events = []
    for name in ("valid-events.json", "invalid-events.json"):
        document = json.loads((samples_dir / CONFORMANCE / name).read_text("utf-8"))
        events += [test["event"] for test in document["tests"] if "event" in test]
    return events


@pytest.fixture(scope="module")
def conformance_events(samples_dir: Path) -> list[dict[str, Any]]:
    return _conformance_events(samples_dir)


def _from_json(data: bytes) -> Event:
    return Event.from_json(data)


def _check_round_trip(result: Event | Exception) -> None:
    """An accepted event must survive its own JSON form unchanged."""
    if isinstance(result, Event):
        again = Event.from_json(result.to_json())
        assert again.to_dict() == result.to_dict()


@PROPERTY_SETTINGS
@given(data=st.binary(max_size=512))
def test_envelope_from_json_any_bytes(data: bytes) -> None:
    _check_round_trip(parse_or_error(_from_json, data, EnvelopeError))


@PROPERTY_SETTINGS
@given(data=st.data())
def test_envelope_from_json_mutated_conformance_events(
    data: st.DataObject, conformance_events: list[dict[str, Any]]
) -> None:
    samples = [orjson.dumps(event) for event in conformance_events]
    body = data.draw(mutated(samples))

    _check_round_trip(parse_or_error(_from_json, body, EnvelopeError))


@PROPERTY_SETTINGS
@given(data=st.data())
def test_envelope_from_dict_tricky_attribute_values(
    data: st.DataObject, conformance_events: list[dict[str, Any]]
) -> None:
    document = dict(data.draw(st.sampled_from(conformance_events)))
    changes = data.draw(
        st.dictionaries(
            st.sampled_from(ATTRIBUTES),
            st.one_of(st.sampled_from(TRICKY_VALUES), st.text(max_size=20)),
            max_size=4,
        )
    )
    document.update(changes)
    removed = data.draw(st.lists(st.sampled_from(ATTRIBUTES), max_size=2))
    for name in removed:
        document.pop(name, None)

    with bounded():
        try:
            event = Event.from_dict(document)
        except EnvelopeError as exc:
            assert exc.violations, "an EnvelopeError lists no violation"
            assert str(exc).strip()
            return
    _check_round_trip(event)


@PROPERTY_SETTINGS
@given(
    text=st.one_of(
        st.text(max_size=40),
        st.sampled_from([v for v in TRICKY_VALUES if isinstance(v, str)]),
    )
)
def test_envelope_parse_time_any_text(text: str) -> None:
    with bounded():
        try:
            moment = parse_time(text)
        except ValueError as exc:
            assert str(exc).strip()
            return
    assert moment.tzinfo is not None


def test_envelope_rejects_non_ascii_data_base64() -> None:
    """A non-ASCII data_base64 once passed the check and then crashed the decoder."""
    document = {
        "specversion": "1.0",
        "id": "e-1",
        "source": "test",
        "type": "x.y.z",
        "data_base64": "\x80",
    }

    with pytest.raises(EnvelopeError) as caught:
        Event.from_dict(document)

    [violation] = caught.value.violations
    assert violation.path == "data_base64"
    assert violation.rule == "expected the data as a Base64 string (RFC 4648)"
