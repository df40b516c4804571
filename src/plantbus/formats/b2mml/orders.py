"""Turn a released production order into the B2MML schedule that an MES receives.

`write_order_released` maps one `production.order.released.v1` event to a
V0600 ProcessProductionSchedule with one ProductionRequest:

| event field | B2MML element |
| --- | --- |
| event id | ApplicationArea/BODID |
| event time | ApplicationArea/CreationDateTime |
| order_id | ProductionSchedule/ID and ProductionRequest/ID |
| description | ProductionRequest/Description |
| plant | ProductionRequest/HierarchyScope at the 'Site' level |
| planned_start, planned_end | ProductionRequest/StartTime and EndTime |
| item, quantity | the produced MaterialRequirement and its Quantity |
| warehouse | the produced material's Location at the 'StorageZone' level |
| bom, routing, erp_ref | ProductionParameters with those IDs |

The segment's EarliestStartTime and LatestEndTime repeat the planned window.

`parse_b2mml` reads the document back to an event with the same data.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from plantbus.events.envelope import Event
from plantbus.formats.b2mml.writer import MaterialLine, write_production_schedule

ORDER_RELEASED = "production.order.released.v1"
# Data fields written as ProductionParameters, in this order.
PARAMETER_FIELDS = ("bom", "routing", "erp_ref")


def write_order_released(event: Event) -> bytes:
    """Build a ProcessProductionSchedule from a `production.order.released.v1` event.

    Raise ValueError, naming the event and the field, when the event is of
    another type or its data cannot be written.
    """
    if event.type != ORDER_RELEASED:
        raise ValueError(
            f"Event {event.id!r} has the type {event.type!r}; only "
            f"{ORDER_RELEASED} events can be written as a ProductionSchedule, "
            f"so route other types to another sink."
        )
    data = event.data if isinstance(event.data, dict) else {}
    order_id = _required_text(event, data, "order_id")
    item = _required_text(event, data, "item")
    quantity = data.get("quantity")
    if not isinstance(quantity, dict):
        raise ValueError(
            f"Event {event.id!r} field `data.quantity` is {quantity!r}; expected "
            f"an object such as {{'value': '12.5', 'unit': 'kg'}}."
        )
    amount = _decimal(event, quantity.get("value"))
    unit = _required_text(event, quantity, "unit", "data.quantity.unit")
    parameters = {name: str(data[name]) for name in PARAMETER_FIELDS if data.get(name)}

    planned_start = _time(event, data, "planned_start")
    planned_end = _time(event, data, "planned_end")
    if planned_start and planned_end and planned_end < planned_start:
        raise ValueError(
            f"Event {event.id!r} field `data.planned_end` is "
            f"{data['planned_end']!r}, before `data.planned_start` "
            f"{data['planned_start']!r}; the end must not be before the start."
        )
    return write_production_schedule(
        order_id=order_id,
        product=MaterialLine(item, amount, unit),
        planned_start=planned_start,
        planned_end=planned_end,
        plant=_optional_text(data, "plant"),
        description=_optional_text(data, "description"),
        warehouse=_optional_text(data, "warehouse"),
        parameters=parameters,
        document_id=event.id,
        created_at=_event_time(event),
    )


def _required_text(
    event: Event, data: dict[str, Any], name: str, field: str | None = None
) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(
            f"Event {event.id!r} field `{field or 'data.' + name}` is {value!r}; "
            f"expected a non-empty string."
        )
    return value


def _optional_text(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) and value else None


def _decimal(event: Event, value: object) -> Decimal:
    try:
        amount = Decimal(str(value)) if isinstance(value, str) else None
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite() or amount < 0:
        raise ValueError(
            f"Event {event.id!r} field `data.quantity.value` is {value!r}; "
            f"expected a decimal string of zero or more such as '12.5'."
        )
    return amount


def _time(event: Event, data: dict[str, Any], name: str) -> datetime | None:
    value = data.get(name)
    if value is None:
        return None
    moment = _parse_time(value)
    if moment is None:
        raise ValueError(
            f"Event {event.id!r} field `data.{name}` is {value!r}; expected an "
            f"RFC 3339 time with a UTC offset such as '2026-03-01T06:00:00Z'."
        )
    return moment


def _event_time(event: Event) -> datetime | None:
    if event.time is None:
        return None
    moment = _parse_time(event.time)
    if moment is None:
        raise ValueError(
            f"Event {event.id!r} has the time {event.time!r}; expected an RFC "
            f"3339 time with a UTC offset such as '2026-03-01T06:00:00Z'."
        )
    return moment


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None
