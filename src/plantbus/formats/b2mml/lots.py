"""Map B2MML material lots and sublots to `inventory.lot.changed.v1` events.

A lot document reports the state of a lot: its status, the quantity on hand
and where it is stored. That is a stock level, not a movement between two
locations, so it does not fit `inventory.stock.moved.v1`. One event per
MaterialLot and one per MaterialSubLot (nested ones included):

- `lot` is the MaterialLot's ID and `sublot` the MaterialSubLot's ID; the
  lot is the subject and partition key;
- `item` is the lot's MaterialDefinitionID, else the ID of the enclosing
  MaterialInformation. NOTE: B2MML V0401 senders (the MESA Courbon samples)
  name the material in MaterialInformation/ID; for a sender that uses that
  ID for something else, the item is wrong, so ask for MaterialDefinitionID;
- `status` is Status, `description` the first Description;
- `quantity` is the first Quantity whose unit is not a rate;
- `location` is StorageLocation (V0700: StorageLocation/Location), else
  Location/EquipmentID;
- `expires_at` is the ValueString of a lot property with the ID 'ExpiryDate'
  or 'ExpirationDate' (any case), read as an xs:dateTime.

A lot whose only content is its sublots is a container and yields no event
of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from lxml import etree

from plantbus.events.envelope import Event, format_time
from plantbus.formats.b2mml.values import (
    Document,
    catalogue_decimal,
    data_nouns,
    local_name,
    read_properties,
    to_decimal,
    to_utc,
)

LOT_CHANGED = "inventory.lot.changed.v1"
_EXPIRY_PROPERTIES = ("expirydate", "expirationdate")
# Property element names of lots and sublots across V0401, V0600 and V0700.
_PROPERTY_TAGS = ("MaterialLotProperty", "MaterialSublotProperty")
# Child sublot element names: V0700 calls nested sublots MaterialSubLotChild.
_SUBLOT_TAGS = ("MaterialSubLot", "MaterialSubLotChild")


def map_lots(doc: Document, created: datetime | None) -> list[Event]:
    """Build lot-changed events for every MaterialLot and MaterialSubLot."""
    events: list[Event] = []
    for lot, information in _lots(doc):
        lot_id = doc.text(lot, "ID")
        if lot_id is None:
            doc.problem(lot, None, "has no ID, so it names no material lot")
            continue
        item = doc.text(lot, "MaterialDefinitionID")
        if item is None and information is not None:
            item = doc.text(information, "ID")
        if item is None:
            doc.problem(
                lot,
                lot_id,
                "names no material: add a MaterialDefinitionID to the lot",
            )
            continue

        builder = _LotEvents(doc, lot_id, item, created)
        sublots = list(_sublots(doc, lot))
        if not sublots or _has_state(doc, lot):
            events.append(builder.event(lot, None))
        events.extend(builder.event(sub, doc.text(sub, "ID")) for sub in sublots)
    return events


def _lots(doc: Document) -> Iterator[tuple[etree._Element, etree._Element | None]]:
    """Yield each MaterialLot with its enclosing MaterialInformation, if any."""
    if doc.kind == "MaterialLot":
        for lot in data_nouns(doc, "MaterialLot"):
            yield lot, None
        return
    for information in data_nouns(doc, "MaterialInformation"):
        for lot in doc.children(information, "MaterialLot"):
            yield lot, information


def _sublots(doc: Document, parent: etree._Element) -> Iterator[etree._Element]:
    """Yield the sublots under `parent`, depth first, in document order."""
    sublot_tags = {doc.tag(name) for name in _SUBLOT_TAGS}
    for child in parent:
        if child.tag in sublot_tags:
            yield child
            yield from _sublots(doc, child)


def _has_state(doc: Document, lot: etree._Element) -> bool:
    """Return whether a lot reports anything besides its sublots."""
    names = ("Status", "Quantity", "StorageLocation", "Location", *_PROPERTY_TAGS)
    return any(doc.child(lot, name) is not None for name in names)


class _LotEvents:
    """Build the events of one lot and its sublots with shared attributes."""

    def __init__(
        self, doc: Document, lot_id: str, item: str, created: datetime | None
    ) -> None:
        self.doc = doc
        self.lot_id = lot_id
        self.item = item
        self.created = created

    def event(self, element: etree._Element, sublot: str | None) -> Event:
        doc = self.doc
        data: dict[str, object] = {"lot": self.lot_id, "item": self.item}
        if sublot is not None:
            data["sublot"] = sublot
        optional = {
            "status": doc.text(element, "Status"),
            "description": doc.text(element, "Description"),
            "quantity": self._quantity(element),
            "location": self._location(element),
            "expires_at": self._expiry(element),
        }
        data.update({key: value for key, value in optional.items() if value})
        return doc.event(
            LOT_CHANGED, element, data, subject=self.lot_id, time=self.created
        )

    def _quantity(self, element: etree._Element) -> dict[str, str] | None:
        doc = self.doc
        for quantity in doc.children(element, "Quantity"):
            text = doc.text(quantity, "QuantityString")
            unit = doc.text(quantity, "UnitOfMeasure")
            if text is None or "/" in (unit or ""):
                continue
            value_element = doc.child(quantity, "QuantityString")
            assert value_element is not None
            try:
                value = to_decimal(text)
            except ValueError as exc:
                doc.problem(value_element, text, str(exc))
                return None
            if value < 0:
                doc.problem(
                    value_element,
                    text,
                    f"is negative; the quantity of {local_name(element)} "
                    f"{doc.text(element, 'ID')!r} must be zero or more",
                )
                return None
            if unit is None:
                doc.problem(
                    quantity,
                    None,
                    "has no UnitOfMeasure; plantbus quantities always carry a "
                    "unit, so add one such as 'kg'",
                )
                return None
            return {"value": catalogue_decimal(text, value), "unit": unit}
        return None

    def _location(self, element: etree._Element) -> str | None:
        doc = self.doc
        storage = doc.child(element, "StorageLocation")
        if storage is not None:
            # V0401 and V0600 give the location as text, V0700 in a child
            # Location beside its LocationType.
            text = (storage.text or "").strip()
            return text or doc.text(storage, "Location")
        place = doc.child(element, "Location")
        return None if place is None else doc.text(place, "EquipmentID")

    def _expiry(self, element: etree._Element) -> str | None:
        doc = self.doc
        for tag in _PROPERTY_TAGS:
            for prop in read_properties(doc, element, tag):
                if prop.name.lower() not in _EXPIRY_PROPERTIES:
                    continue
                try:
                    return format_time(to_utc(prop.value, doc.default_tz))
                except ValueError as exc:
                    doc.problem(prop.element, prop.value, str(exc))
        return None
