"""Map ProductionSchedule documents to `production.order.released.v1` events.

One event per ProductionRequest:

- `order_id` is the request's ID, also the subject, partition key and
  correlation id;
- `item` and `quantity` come from the request's produced material: the first
  MaterialRequirement with MaterialUse 'Produced' (or V0600
  MaterialProducedRequirement) in document order, searching nested
  SegmentRequirements depth first. Its amount is the first Quantity whose unit
  is not a rate;
- `planned_start` is the request's StartTime, else the earliest
  EarliestStartTime of its SegmentRequirements; `planned_end` is the request's
  EndTime, else the latest LatestEndTime;
- `plant` is the configured plant, else the EquipmentID of a HierarchyScope or
  Location at the 'Site' level of the request or the schedule;
- `description` is the request's Description;
- `warehouse` is the EquipmentID of the produced material's Location;
- `bom`, `routing` and `erp_ref` are the ValueStrings of the
  ProductionParameters with those IDs in the request's segments, as
  `write_order_released` writes them.

A request without an ID or without a produced material cannot be released as
an order, so it is skipped with a warning in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime

from lxml import etree

from plantbus.events.envelope import Event, format_time
from plantbus.formats.b2mml.materials import Material, material_use, read_material
from plantbus.formats.b2mml.values import (
    Document,
    data_nouns,
    element_path,
    read_properties,
)

logger = logging.getLogger("plantbus.formats.b2mml")

ORDER_RELEASED = "production.order.released.v1"
_PRODUCED_REQUIREMENTS = ("MaterialRequirement", "MaterialProducedRequirement")
# Order fields that travel as ProductionParameters of the same ID.
_PARAMETER_FIELDS = ("bom", "routing", "erp_ref")


def map_schedule(doc: Document, created: datetime | None) -> list[Event]:
    """Build one order-released event per ProductionRequest of a schedule."""
    events = []
    skipped = []
    for schedule in data_nouns(doc, "ProductionSchedule"):
        for request in doc.children(schedule, "ProductionRequest"):
            if doc.text(request, "ID") is None or (
                _produced_requirement(doc, request) is None
            ):
                skipped.append(element_path(request))
                continue
            event = _released(doc, schedule, request, created)
            if event is not None:
                events.append(event)

    # Logged only when the mapping found no problem; a rejection names the cause.
    if skipped and not doc.problems:
        logger.warning(
            "Skipped %d ProductionRequest(s) in %r without an ID or a produced "
            "MaterialRequirement, so they release no order: %s",
            len(skipped),
            doc.source_name,
            ", ".join(skipped),
        )
    return events


def _released(
    doc: Document,
    schedule: etree._Element,
    request: etree._Element,
    created: datetime | None,
) -> Event | None:
    order_id = doc.text(request, "ID")
    produced = _produced_requirement(doc, request)
    if order_id is None or produced is None:
        return None

    material = read_material(doc, produced, None)
    start, end = _planned_window(doc, request)
    plant = doc.plant or _site(doc, request) or _site(doc, schedule)
    if plant is None:
        doc.problem(
            request,
            order_id,
            "names no plant: no HierarchyScope or Location at the 'Site' "
            "level was found, so configure the plant of this source",
        )
    if start is not None and end is not None and end < start:
        doc.problem(
            request,
            order_id,
            f"has a planned end {format_time(end)} before its planned "
            f"start {format_time(start)}; the end must not be before the "
            f"start",
        )
    if material is None or plant is None:
        return None

    data = _released_data(doc, request, order_id, material, plant, start, end)
    return doc.event(
        ORDER_RELEASED,
        request,
        data,
        subject=order_id,
        time=created,
        correlationid=order_id,
        plant=plant,
    )


def _released_data(
    doc: Document,
    request: etree._Element,
    order_id: str,
    material: Material,
    plant: str,
    start: datetime | None,
    end: datetime | None,
) -> dict[str, object]:
    data: dict[str, object] = {
        "order_id": order_id,
        "item": material.item,
        "quantity": {"value": material.text, "unit": material.unit},
        "plant": plant,
    }
    if start is not None:
        data["planned_start"] = format_time(start)
    if end is not None:
        data["planned_end"] = format_time(end)
    description = doc.text(request, "Description")
    if description is not None:
        data["description"] = description
    if material.location is not None:
        data["warehouse"] = material.location
    data.update(_parameters(doc, request))
    return data


def _parameters(doc: Document, request: etree._Element) -> dict[str, str]:
    """Return the order fields that the request carries as ProductionParameters."""
    found: dict[str, str] = {}
    for segment in _segments(doc, request):
        for production_parameter in doc.children(segment, "ProductionParameter"):
            for prop in read_properties(doc, production_parameter, "Parameter"):
                if prop.name in _PARAMETER_FIELDS and prop.value:
                    found.setdefault(prop.name, prop.value)
    return found


def _produced_requirement(
    doc: Document, request: etree._Element
) -> etree._Element | None:
    for segment in _segments(doc, request):
        for name in _PRODUCED_REQUIREMENTS:
            for requirement in doc.children(segment, name):
                if material_use(doc, requirement) == "Produced":
                    return requirement
    return None


def _segments(doc: Document, parent: etree._Element) -> Iterator[etree._Element]:
    """Yield the SegmentRequirements under `parent`, depth first, in document order."""
    for segment in doc.children(parent, "SegmentRequirement"):
        yield segment
        yield from _segments(doc, segment)


def _planned_window(
    doc: Document, request: etree._Element
) -> tuple[datetime | None, datetime | None]:
    start = doc.time(request, "StartTime")
    end = doc.time(request, "EndTime")
    segments = list(_segments(doc, request))
    if start is None:
        starts = [doc.time(s, "EarliestStartTime") for s in segments]
        start = min((t for t in starts if t is not None), default=None)
    if end is None:
        ends = [doc.time(s, "LatestEndTime") for s in segments]
        end = max((t for t in ends if t is not None), default=None)
    return start, end


def _site(doc: Document, element: etree._Element) -> str | None:
    """Return the EquipmentID at the 'Site' level of a scope or location chain."""
    for name in ("HierarchyScope", "Location"):
        scope = doc.child(element, name)
        while scope is not None:
            if doc.text(scope, "EquipmentElementLevel") == "Site":
                return doc.text(scope, "EquipmentID")
            scope = doc.child(scope, name)
    return None
