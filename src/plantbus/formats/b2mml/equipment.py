"""Map B2MML equipment to `masterdata.equipment.changed.v1` events.

One event per Equipment element, nested ones included (V0700 calls them
EquipmentChild), in document order:

- `equipment_id` is the ID, also the subject and partition key;
- `name` is the first Description;
- `level` is EquipmentLevel/EquipmentElementLevel (V0600, where the level is
  a hierarchy scope), the text of EquipmentLevel (V0700), or absent (V0401
  equipment has no level);
- `parent` is the ID of the enclosing Equipment;
- `classes` are its EquipmentClassIDs;
- `properties` hold one entry per Value of each EquipmentProperty that has a
  ValueString: the property ID, the text and the unit when given.

Equipment classes and capability test specifications map to no event.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from lxml import etree

from plantbus.events.envelope import Event
from plantbus.formats.b2mml.values import (
    Document,
    contained_nouns,
    read_properties,
)

EQUIPMENT_CHANGED = "masterdata.equipment.changed.v1"
_CHILD_TAGS = ("Equipment", "EquipmentChild")


def map_equipment(doc: Document, created: datetime | None) -> list[Event]:
    """Build one equipment-changed event per Equipment of the document."""
    events = []
    for top in contained_nouns(doc, "Equipment", "EquipmentInformation"):
        for equipment, parent in _walk(doc, top, None):
            event = _changed(doc, equipment, parent, created)
            if event is not None:
                events.append(event)
    return events


def _walk(
    doc: Document, equipment: etree._Element, parent: str | None
) -> Iterator[tuple[etree._Element, str | None]]:
    yield equipment, parent
    child_tags = {doc.tag(name) for name in _CHILD_TAGS}
    for child in equipment:
        if child.tag in child_tags:
            yield from _walk(doc, child, doc.text(equipment, "ID"))


def _changed(
    doc: Document,
    equipment: etree._Element,
    parent: str | None,
    created: datetime | None,
) -> Event | None:
    equipment_id = doc.text(equipment, "ID")
    if equipment_id is None:
        doc.problem(equipment, None, "has no ID, so it names no equipment")
        return None

    data: dict[str, object] = {"equipment_id": equipment_id}
    name = doc.text(equipment, "Description")
    if name is not None:
        data["name"] = name
    level = _level(doc, equipment)
    if level is not None:
        data["level"] = level
    if parent is not None:
        data["parent"] = parent
    classes = [
        (found.text or "").strip()
        for found in doc.children(equipment, "EquipmentClassID")
        if (found.text or "").strip()
    ]
    if classes:
        data["classes"] = classes
    properties = []
    for prop in read_properties(doc, equipment, "EquipmentProperty"):
        entry = {"name": prop.name, "value": prop.value}
        if prop.unit is not None:
            entry["unit"] = prop.unit
        properties.append(entry)
    if properties:
        data["properties"] = properties
    return doc.event(
        EQUIPMENT_CHANGED, equipment, data, subject=equipment_id, time=created
    )


def _level(doc: Document, equipment: etree._Element) -> str | None:
    level = doc.child(equipment, "EquipmentLevel")
    if level is None:
        return None
    return (level.text or "").strip() or doc.text(level, "EquipmentElementLevel")
