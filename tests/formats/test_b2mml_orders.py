"""Released production orders out as B2MML V0600 ProductionSchedule documents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import xmlschema

from plantbus.events.envelope import Event
from plantbus.formats.b2mml import parse_b2mml
from plantbus.formats.b2mml.orders import write_order_released

EVENT_ID = "6f1e4c52-5a8e-5b1f-9c3e-2d7a1b0c9e44"


def _released(**changes: Any) -> Event:
    """Build an order-released event of the shape the Tryton order source sends."""
    data: dict[str, Any] = {
        "order_id": "MO-0042",
        "item": "FG-100",
        "quantity": {"value": "250.500", "unit": "kg"},
        "plant": "P1",
        "warehouse": "WH-P1",
        "erp_ref": "production,42",
        "bom": "BOM-FG-100",
        "routing": "Mixing and filling",
        "planned_start": "2026-03-02T00:00:00Z",
        "planned_end": "2026-03-03T00:00:00Z",
        "description": "Blend & fill <line 2>",
    }
    data.update(changes)
    return Event(
        id=EVENT_ID,
        source="tryton://127.0.0.1/plant",
        type="production.order.released.v1",
        data={key: value for key, value in data.items() if value is not None},
        subject="MO-0042",
        time="2026-03-01T17:45:10.250000Z",
        correlationid="MO-0042",
        partitionkey="MO-0042",
        plant="P1",
    )


def _schema(b2mml_xsd: Path) -> xmlschema.XMLSchema10:
    path = b2mml_xsd / "V0600" / "B2MML-V0600-ProductionSchedule.xsd"
    return xmlschema.XMLSchema10(str(path))


def test_write_order_released_validates_against_v0600_xsd(b2mml_xsd: Path) -> None:
    schema = _schema(b2mml_xsd)

    full = list(schema.iter_errors(write_order_released(_released())))
    minimal = write_order_released(
        _released(
            warehouse=None,
            erp_ref=None,
            bom=None,
            routing=None,
            planned_start=None,
            planned_end=None,
            description=None,
        )
    )

    assert full == []
    assert list(schema.iter_errors(minimal)) == []


def test_write_order_released_round_trips_every_field(b2mml_xsd: Path) -> None:
    event = _released()

    [parsed] = parse_b2mml(write_order_released(event), "mo.xml", b2mml_xsd)

    assert parsed.type == event.type
    assert parsed.data == event.data
    assert parsed.time == "2026-03-01T17:45:10.250000Z"
    assert parsed.subject == "MO-0042"


def test_write_order_released_minimal_round_trips(b2mml_xsd: Path) -> None:
    event = _released(
        warehouse=None,
        erp_ref=None,
        bom=None,
        routing=None,
        planned_start=None,
        planned_end=None,
        description=None,
    )

    [parsed] = parse_b2mml(write_order_released(event), "mo.xml", b2mml_xsd)

    assert parsed.data == {
        "order_id": "MO-0042",
        "item": "FG-100",
        "quantity": {"value": "250.500", "unit": "kg"},
        "plant": "P1",
    }


def test_write_order_released_names_event_in_header() -> None:
    document = write_order_released(_released())

    assert f"<BODID>{EVENT_ID}</BODID>".encode() in document
    assert b"<CreationDateTime>2026-03-01T17:45:10.250000Z</CreationDateTime>" in (
        document
    )
    assert b'releaseID="V0600"' in document


def test_write_order_released_same_event_same_bytes() -> None:
    assert write_order_released(_released()) == write_order_released(_released())


def test_write_order_released_offset_times_utc(b2mml_xsd: Path) -> None:
    event = _released(planned_start="2026-03-02T06:00:00+01:00")

    [parsed] = parse_b2mml(write_order_released(event), "mo.xml", b2mml_xsd)

    assert parsed.data["planned_start"] == "2026-03-02T05:00:00Z"


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (
            Event(
                id="e-1", source="s", type="production.workorder.completed.v1", data={}
            ),
            "Event 'e-1' has the type 'production.workorder.completed.v1'; only "
            "production.order.released.v1 events can be written as a "
            "ProductionSchedule, so route other types to another sink.",
        ),
        (
            _released(quantity={"value": "12,5", "unit": "kg"}),
            f"Event '{EVENT_ID}' field `data.quantity.value` is '12,5'; expected "
            f"a decimal string of zero or more such as '12.5'.",
        ),
        (
            _released(quantity={"value": "1", "unit": ""}),
            f"Event '{EVENT_ID}' field `data.quantity.unit` is ''; expected a "
            f"non-empty string.",
        ),
        (
            _released(order_id=None),
            f"Event '{EVENT_ID}' field `data.order_id` is None; expected a "
            f"non-empty string.",
        ),
        (
            _released(planned_end="2026-03-03"),
            f"Event '{EVENT_ID}' field `data.planned_end` is '2026-03-03'; "
            f"expected an RFC 3339 time with a UTC offset such as "
            f"'2026-03-01T06:00:00Z'.",
        ),
        (
            _released(planned_end="2026-03-01T00:00:00Z"),
            f"Event '{EVENT_ID}' field `data.planned_end` is "
            f"'2026-03-01T00:00:00Z', before `data.planned_start` "
            f"'2026-03-02T00:00:00Z'; the end must not be before the start.",
        ),
    ],
    ids=["type", "quantity", "unit", "order-id", "time", "window"],
)
def test_write_order_released_bad_event_raises(event: Event, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        write_order_released(event)

    assert str(caught.value) == message
