"""Material lines of B2MML documents: item, quantity, unit, lot and location.

Requirements (ProductionSchedule) and actuals (ProductionPerformance) carry
materials with the same children, so one reader serves both.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from lxml import etree

from plantbus.formats.b2mml.values import (
    NUMERIC_DATA_TYPES,
    Document,
    catalogue_decimal,
    local_name,
    to_decimal,
)

# The V0600 element names that imply the material use without a MaterialUse.
_IMPLIED_USE = {
    "MaterialProducedRequirement": "Produced",
    "MaterialConsumedRequirement": "Consumed",
    "MaterialProducedActual": "Produced",
    "MaterialConsumedActual": "Consumed",
}


@dataclass(frozen=True, slots=True)
class Material:
    """One material line that maps to an event."""

    element: etree._Element
    item: str
    value: Decimal
    text: str  # the catalogue decimal string of `value`
    unit: str
    lot: str | None
    location: str | None
    at: datetime | None  # when the enclosing segment ended, if known


def material_use(doc: Document, element: etree._Element) -> str | None:
    """Return the MaterialUse of a material element, explicit or implied."""
    return doc.text(element, "MaterialUse") or _IMPLIED_USE.get(local_name(element))


def read_material(
    doc: Document, element: etree._Element, at: datetime | None
) -> Material | None:
    """Read a material line that must become an event; record problems if unusable."""
    item = doc.text(element, "MaterialDefinitionID")
    if item is None:
        doc.problem(
            element,
            None,
            "has no MaterialDefinitionID; a produced or consumed material "
            "needs the item it refers to",
        )
        return None

    quantity = amount_quantity(doc, element)
    if quantity is None:
        return None
    text = (doc.text(quantity, "QuantityString") or "").strip()
    unit = doc.text(quantity, "UnitOfMeasure")
    try:
        value = to_decimal(text)
    except ValueError as exc:
        doc.problem(_value_element(doc, quantity), text, str(exc))
        return None
    if value < 0:
        doc.problem(
            _value_element(doc, quantity),
            text,
            f"is negative; a {(material_use(doc, element) or '').lower()} "
            f"quantity must be zero or more, so report returned material "
            f"as a stock movement instead",
        )
        return None
    if unit is None:
        doc.problem(
            quantity,
            None,
            "has no UnitOfMeasure; plantbus quantities always carry a unit, "
            "so add one such as 'kg'",
        )
        return None

    location = None
    place = doc.child(element, "Location")
    if place is not None:
        location = doc.text(place, "EquipmentID")
    return Material(
        element=element,
        item=item,
        value=value,
        text=catalogue_decimal(text, value),
        unit=unit,
        lot=doc.text(element, "MaterialLotID"),
        location=location,
        at=at,
    )


def amount_quantity(doc: Document, element: etree._Element) -> etree._Element | None:
    """Pick the Quantity that states an amount of material; record a problem if none.

    A material may carry several quantities distinguished by a Key, for example a
    production rate in 't/h' and an amount in 't'. The first quantity whose
    unit is not a rate (has no '/') is the amount.
    """
    # NOTE: the '/' test is a heuristic. B2MML defines no Key for "amount", so
    # a rate unit written without '/' (e.g. 'tph') would be taken as the amount.
    quantities = [
        quantity
        for quantity in doc.children(element, "Quantity")
        if doc.text(quantity, "QuantityString") is not None
    ]
    if not quantities:
        doc.problem(
            element,
            None,
            "has no Quantity with a QuantityString; a produced or consumed "
            "material needs an amount",
        )
        return None
    amounts = [
        quantity
        for quantity in quantities
        if "/" not in (doc.text(quantity, "UnitOfMeasure") or "")
    ]
    if not amounts:
        units = [doc.text(quantity, "UnitOfMeasure") for quantity in quantities]
        doc.problem(
            element,
            units,
            "are all rates (units with '/'); add a Quantity that states the "
            "amount of material",
        )
        return None
    return amounts[0]


def check_quantities(doc: Document) -> None:
    """Record every Quantity whose DataType is numeric but whose value is not."""
    for quantity in doc.root.iter(doc.tag("Quantity")):
        data_type = doc.text(quantity, "DataType")
        text = doc.text(quantity, "QuantityString")
        if data_type not in NUMERIC_DATA_TYPES or text is None:
            continue
        try:
            to_decimal(text)
        except ValueError as exc:
            # Same message as the mapping's own check, so that the two collapse.
            doc.problem(
                _value_element(doc, quantity),
                text,
                str(exc),
            )


def _value_element(doc: Document, quantity: etree._Element) -> etree._Element:
    # lxml elements without children are falsy, so `or` cannot pick one here.
    found = doc.child(quantity, "QuantityString")
    return quantity if found is None else found
