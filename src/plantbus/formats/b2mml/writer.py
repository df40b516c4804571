"""Build B2MML V0600 documents: a work order's performance and an order's schedule.

A plant simulator can drop these documents into a watched folder, and `parse_b2mml`
maps them back to the same values. `write_order_released` turns a
`production.order.released.v1` event into the ProductionSchedule that an MES
receives. The output validates against the V0600 ProductionPerformance and
ProductionSchedule XSDs. Equal arguments give equal bytes, so a resent
document keeps its event ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from lxml import etree

from plantbus.events.envelope import format_time

NAMESPACE_V0600 = "http://www.mesa.org/xml/B2MML-V0600"
# Value of the releaseID attribute, which V0600 transaction documents require.
RELEASE_ID = "V0600"


@dataclass(frozen=True, slots=True)
class MaterialLine:
    """One material of a work order: item, amount with its unit, and lot."""

    item: str
    quantity: Decimal
    unit: str
    lot: str | None = None


def write_production_performance(
    *,
    work_order_id: str,
    produced: MaterialLine,
    started_at: datetime,
    ended_at: datetime,
    consumed: Sequence[MaterialLine] = (),
    operation: str | None = None,
    created_at: datetime | None = None,
) -> bytes:
    """Build a ProcessProductionPerformance document for one completed work order.

    The ProductionResponse carries the work order id as both its ID and its
    ProductionRequestID. One SegmentResponse contains the produced material
    first, then the consumed materials. `created_at` defaults to `ended_at`.
    """
    _check_window(started_at, ended_at)
    for line in (produced, *consumed):
        _check_line(line)

    root = _transaction(
        "ProcessProductionPerformance", "Process", created_at or ended_at
    )
    performance = _sub(root.find(_tag("DataArea")), "ProductionPerformance")
    _sub(performance, "ID", work_order_id)
    response = _sub(performance, "ProductionResponse")
    _sub(response, "ID", work_order_id)
    _sub(response, "ProductionRequestID", work_order_id)
    _sub(response, "StartTime", format_time(started_at))
    _sub(response, "EndTime", format_time(ended_at))

    segment = _sub(response, "SegmentResponse")
    _sub(segment, "ID", "1")
    if operation is not None:
        _sub(segment, "ProcessSegmentID", operation)
    _sub(segment, "ActualStartTime", format_time(started_at))
    _sub(segment, "ActualEndTime", format_time(ended_at))
    _material(segment, "MaterialActual", produced, "Produced")
    for line in consumed:
        _material(segment, "MaterialActual", line, "Consumed")
    return _serialise(root)


def write_production_schedule(
    *,
    order_id: str,
    product: MaterialLine,
    planned_start: datetime | None = None,
    planned_end: datetime | None = None,
    plant: str | None = None,
    description: str | None = None,
    warehouse: str | None = None,
    parameters: Mapping[str, str] | None = None,
    document_id: str | None = None,
    created_at: datetime | None = None,
) -> bytes:
    """Build a ProcessProductionSchedule document that releases one order.

    `plant` becomes a HierarchyScope at the 'Site' level and `warehouse` the
    Location (level 'StorageZone') of the produced material. `parameters`
    become ProductionParameters of the segment, in the given order.
    `document_id` becomes ApplicationArea/BODID. `created_at` defaults to
    `planned_start`; one of the two is required.
    """
    if planned_start is not None and planned_end is not None:
        _check_window(planned_start, planned_end)
    created = created_at or planned_start
    if created is None:
        raise ValueError(
            f"Order {order_id!r} has neither a creation time nor a planned "
            f"start; pass `created_at` so that the document has a "
            f"CreationDateTime."
        )
    _check_line(product)

    root = _transaction("ProcessProductionSchedule", "Process", created, document_id)
    schedule = _sub(root.find(_tag("DataArea")), "ProductionSchedule")
    _sub(schedule, "ID", order_id)
    request = _sub(schedule, "ProductionRequest")
    _sub(request, "ID", order_id)
    if description is not None:
        _sub(request, "Description", description)
    if plant is not None:
        _scope(request, "HierarchyScope", plant, "Site")
    if planned_start is not None:
        _sub(request, "StartTime", format_time(planned_start))
    if planned_end is not None:
        _sub(request, "EndTime", format_time(planned_end))

    segment = _sub(request, "SegmentRequirement")
    _sub(segment, "ID", "1")
    if planned_start is not None:
        _sub(segment, "EarliestStartTime", format_time(planned_start))
    if planned_end is not None:
        _sub(segment, "LatestEndTime", format_time(planned_end))
    # The V0600 XSD allows one Parameter per ProductionParameter.
    for name, value in (parameters or {}).items():
        parameter = _sub(_sub(segment, "ProductionParameter"), "Parameter")
        _sub(parameter, "ID", name)
        value_element = _sub(parameter, "Value")
        _sub(value_element, "ValueString", value)
        _sub(value_element, "DataType", "string")
    _material(segment, "MaterialRequirement", product, "Produced", warehouse)
    return _serialise(root)


def _check_window(start: datetime, end: datetime) -> None:
    for name, moment in (("start", start), ("end", end)):
        if moment.tzinfo is None:
            raise ValueError(
                f"The {name} time {moment!r} has no timezone; pass an aware "
                f"datetime such as datetime.now(UTC)."
            )
    if end < start:
        raise ValueError(
            f"The end time {end.isoformat()!r} is before the start time "
            f"{start.isoformat()!r}; the end must not be before the start."
        )


def _check_line(line: MaterialLine) -> None:
    if not line.quantity.is_finite() or line.quantity < 0:
        raise ValueError(
            f"The quantity {line.quantity!r} of item {line.item!r} must be a "
            f"finite decimal of zero or more."
        )
    if not line.unit.strip():
        raise ValueError(
            f"The unit of item {line.item!r} is empty; pass a unit of measure "
            f"such as 'kg'."
        )


def _transaction(
    name: str, verb: str, created_at: datetime, document_id: str | None = None
) -> etree._Element:
    root = etree.Element(_tag(name), nsmap={None: NAMESPACE_V0600})
    root.set("releaseID", RELEASE_ID)
    area = _sub(root, "ApplicationArea")
    _sub(area, "CreationDateTime", format_time(created_at))
    if document_id is not None:
        _sub(area, "BODID", document_id)
    data_area = _sub(root, "DataArea")
    _sub(data_area, verb)
    return root


def _material(
    parent: etree._Element,
    name: str,
    line: MaterialLine,
    use: str,
    location: str | None = None,
) -> None:
    material = _sub(parent, name)
    _sub(material, "MaterialDefinitionID", line.item)
    if line.lot is not None:
        _sub(material, "MaterialLotID", line.lot)
    if location is not None:
        _scope(material, "Location", location, "StorageZone")
    _sub(material, "MaterialUse", use)
    quantity = _sub(material, "Quantity")
    _sub(quantity, "QuantityString", format(line.quantity, "f"))
    _sub(quantity, "DataType", "decimal")
    _sub(quantity, "UnitOfMeasure", line.unit)


def _scope(parent: etree._Element, name: str, equipment: str, level: str) -> None:
    scope = _sub(parent, name)
    _sub(scope, "EquipmentID", equipment)
    _sub(scope, "EquipmentElementLevel", level)


def _tag(name: str) -> str:
    return f"{{{NAMESPACE_V0600}}}{name}"


def _sub(
    parent: etree._Element | None, name: str, text: str | None = None
) -> etree._Element:
    assert parent is not None
    element = etree.SubElement(parent, _tag(name))
    if text is not None:
        element.text = text
    return element


def _serialise(root: etree._Element) -> bytes:
    return etree.tostring(
        root, xml_declaration=True, encoding="UTF-8", pretty_print=True
    )
