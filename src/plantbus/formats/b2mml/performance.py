"""Map ProductionPerformance documents to production events.

Each ProductionResponse is one work order's report:

- `work_order_id` is the response's ProductionRequestID, the id of the order
  that the schedule released, so completion joins the release; without one it
  is the ProductionResponse ID. When ProductionRequestID is given it is also
  `order_id` of the completion;
- each MaterialActual with MaterialUse 'Consumed' (or V0600
  MaterialConsumedActual) in any SegmentResponse, nested ones included,
  becomes `production.material.consumed.v1`: item = MaterialDefinitionID,
  quantity = the first Quantity whose unit is not a rate, lot =
  MaterialLotID, location = Location/EquipmentID, operation = the segment's
  ProcessSegmentID else its ID, consumed_at = the segment's ActualEndTime
  else the response's EndTime;
- each MaterialActual with MaterialUse 'Produced' (or MaterialProducedActual)
  becomes `production.goods.produced.v1` with the same fields and produced_at;
- when anything was produced, one `production.workorder.completed.v1`: item =
  the first produced material, quantity = the sum of the produced lines with
  that item and unit, lot = their lot when they share one, completed_at = the
  response's EndTime else the latest ActualEndTime of its segments.

Other material uses (Consumable, Sample, Carrier, ...) map to no event.
Events of one response are ordered: consumed, produced, completed.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal

from lxml import etree

from plantbus.events.envelope import Event, format_time
from plantbus.formats.b2mml.materials import Material, material_use, read_material
from plantbus.formats.b2mml.values import Document, data_nouns

WORK_ORDER_COMPLETED = "production.workorder.completed.v1"
MATERIAL_CONSUMED = "production.material.consumed.v1"
GOODS_PRODUCED = "production.goods.produced.v1"
_MATERIAL_ACTUALS = (
    "MaterialActual",
    "MaterialProducedActual",
    "MaterialConsumedActual",
)


def map_performance(doc: Document, created: datetime | None) -> list[Event]:
    """Build the consumed, produced and completed events of every ProductionResponse."""
    events: list[Event] = []
    for performance in data_nouns(doc, "ProductionPerformance"):
        for response in doc.children(performance, "ProductionResponse"):
            events.extend(_response_events(doc, response, created))
    return events


def _response_events(
    doc: Document, response: etree._Element, created: datetime | None
) -> list[Event]:
    request_id = doc.text(response, "ProductionRequestID")
    work_order_id = request_id or doc.text(response, "ID")
    if work_order_id is None:
        doc.problem(
            response,
            None,
            "has neither a ProductionRequestID nor an ID, so it names no work order",
        )
        return []

    response_end = doc.time(response, "EndTime")
    consumed: list[tuple[Material, str | None]] = []
    produced: list[tuple[Material, str | None]] = []
    segment_ends: list[datetime] = []
    for segment in _segments(doc, response):
        segment_end = doc.time(segment, "ActualEndTime")
        if segment_end is not None:
            segment_ends.append(segment_end)
        operation = doc.text(segment, "ProcessSegmentID") or doc.text(segment, "ID")
        for actual in _material_actuals(doc, segment):
            use = material_use(doc, actual)
            if use not in ("Consumed", "Produced"):
                continue
            material = read_material(doc, actual, segment_end or response_end)
            if material is None:
                continue
            (consumed if use == "Consumed" else produced).append((material, operation))

    build = _EventBuilder(doc, work_order_id, created)
    events = [
        build.material(MATERIAL_CONSUMED, m, op, "consumed_at") for m, op in consumed
    ]
    events += [
        build.material(GOODS_PRODUCED, m, None, "produced_at") for m, _ in produced
    ]
    if not produced:
        return events

    completed_at = response_end or max(segment_ends, default=None)
    if completed_at is None:
        doc.problem(
            response,
            work_order_id,
            "reports produced material but no EndTime and no "
            "SegmentResponse ActualEndTime; a completion needs the time "
            "it happened",
        )
        return events
    events.append(
        build.completed(response, [m for m, _ in produced], completed_at, request_id)
    )
    return events


class _EventBuilder:
    """Build the events of one work order with shared envelope attributes."""

    def __init__(
        self, doc: Document, work_order_id: str, created: datetime | None
    ) -> None:
        self.doc = doc
        self.work_order_id = work_order_id
        self.created = created

    def material(
        self,
        event_type: str,
        material: Material,
        operation: str | None,
        time_field: str,
    ) -> Event:
        data: dict[str, object] = {
            "work_order_id": self.work_order_id,
            "item": material.item,
            "quantity": {"value": material.text, "unit": material.unit},
        }
        if material.lot is not None:
            data["lot"] = material.lot
        if material.location is not None:
            data["location"] = material.location
        if operation is not None and event_type == MATERIAL_CONSUMED:
            data["operation"] = operation
        if material.at is not None:
            data[time_field] = format_time(material.at)
        return self._event(event_type, material.element, data, material.at)

    def completed(
        self,
        response: etree._Element,
        produced: list[Material],
        completed_at: datetime,
        request_id: str | None,
    ) -> Event:
        first = produced[0]
        same = [m for m in produced if (m.item, m.unit) == (first.item, first.unit)]
        total = sum((m.value for m in same), start=Decimal(0))
        lots = {m.lot for m in same}
        data: dict[str, object] = {
            "work_order_id": self.work_order_id,
            "item": first.item,
            "quantity": {
                "value": first.text if len(same) == 1 else format(total, "f"),
                "unit": first.unit,
            },
            "completed_at": format_time(completed_at),
        }
        if request_id is not None:
            data["order_id"] = request_id
        if len(lots) == 1 and first.lot is not None:
            data["lot"] = first.lot
        return self._event(WORK_ORDER_COMPLETED, response, data, completed_at)

    def _event(
        self,
        event_type: str,
        element: etree._Element,
        data: dict[str, object],
        at: datetime | None,
    ) -> Event:
        # The event time must come from the document so that the same file
        # always yields the same event; the creation time is the fallback.
        return self.doc.event(
            event_type,
            element,
            data,
            subject=self.work_order_id,
            time=at or self.created,
            correlationid=self.work_order_id,
        )


def _segments(doc: Document, parent: etree._Element) -> Iterator[etree._Element]:
    """Yield the SegmentResponses under `parent`, depth first, in document order."""
    for segment in doc.children(parent, "SegmentResponse"):
        yield segment
        yield from _segments(doc, segment)


def _material_actuals(doc: Document, segment: etree._Element) -> list[etree._Element]:
    wanted = {doc.tag(name) for name in _MATERIAL_ACTUALS}
    return [child for child in segment if child.tag in wanted]
