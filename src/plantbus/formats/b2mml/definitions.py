"""Map B2MML material definitions to `masterdata.item.changed.v1` events.

One event per MaterialDefinition, whether it is the document's own noun
(SyncMaterialDefinition) or sits inside a MaterialInformation:

- `item` is the definition's ID, also the subject and partition key;
- `name` is its first Description, else its ID;
- `uom` is the ValueString of the MaterialDefinitionProperty whose ID is
  'BaseUnitOfMeasure' or 'UnitOfMeasure' (any case). B2MML has no element for
  an item's base unit, so senders put it in a property. A definition without
  one is rejected, because the item master needs a unit.

Material classes and QA test specifications map to no event.
"""

from __future__ import annotations

from datetime import datetime

from lxml import etree

from plantbus.events.envelope import Event
from plantbus.formats.b2mml.values import Document, contained_nouns, read_properties

ITEM_CHANGED = "masterdata.item.changed.v1"
# Property IDs that carry the base unit of measure, compared in lower case.
_UNIT_PROPERTIES = ("baseunitofmeasure", "unitofmeasure")


def map_definitions(doc: Document, created: datetime | None) -> list[Event]:
    """Build one item-changed event per MaterialDefinition of the document."""
    events = []
    for definition in contained_nouns(doc, "MaterialDefinition", "MaterialInformation"):
        event = _item_changed(doc, definition, created)
        if event is not None:
            events.append(event)
    return events


def _item_changed(
    doc: Document, definition: etree._Element, created: datetime | None
) -> Event | None:
    item = doc.text(definition, "ID")
    if item is None:
        doc.problem(definition, None, "has no ID, so it names no item")
        return None
    uom = _base_unit(doc, definition)
    if uom is None:
        doc.problem(
            definition,
            item,
            "names no unit of measure; add a MaterialDefinitionProperty with "
            "the ID 'BaseUnitOfMeasure' whose ValueString is the unit, such "
            "as 'kg', because the item master needs one",
        )
        return None

    data: dict[str, object] = {
        "item": item,
        "name": doc.text(definition, "Description") or item,
        "uom": uom,
    }
    return doc.event(ITEM_CHANGED, definition, data, subject=item, time=created)


def _base_unit(doc: Document, definition: etree._Element) -> str | None:
    for prop in read_properties(doc, definition, "MaterialDefinitionProperty"):
        if prop.name.lower() in _UNIT_PROPERTIES and prop.value:
            return prop.value
    return None
