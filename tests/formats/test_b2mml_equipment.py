"""Equipment documents to masterdata.equipment.changed.v1 events."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from plantbus.errors import FormatError
from plantbus.events.catalogue import Catalogue
from plantbus.formats.b2mml import parse_b2mml

SAMPLE = "b2mml/examples/third_party/amplab2mml_ShowEquipmentInformation_V0600.xml"
V0600 = "http://www.mesa.org/xml/B2MML-V0600"


def _tag(name: str) -> str:
    return f"{{{V0600}}}{name}"


def _fixed_sample(samples_dir: Path) -> bytes:
    """Return the equipment sample with its XSD faults fixed in memory.

    The sample omits releaseID, leaves two dates empty, uses ValueInt and a
    bare EquipmentElementLevel (neither is a V0600 child of its parent) and
    puts some children out of the XSD's order.
    """
    root = etree.fromstring((samples_dir / SAMPLE).read_bytes())
    root.set("releaseID", "")
    for name in ("CreationDateTime", "PublishedDate"):
        for element in root.iter(_tag(name)):
            element.text = "2026-03-02T06:00:00Z"
    for element in root.iter(_tag("ValueInt")):
        element.tag = _tag("ValueString")
    # V0600 states the level as a hierarchy scope: the equipment's own ID and
    # its EquipmentElementLevel inside an EquipmentLevel.
    for equipment in root.iter(_tag("Equipment")):
        element_level = equipment.find(_tag("EquipmentElementLevel"))
        if element_level is None:
            continue
        level = etree.Element(_tag("EquipmentLevel"))
        equipment.replace(element_level, level)
        etree.SubElement(level, _tag("EquipmentID")).text = equipment.findtext(
            _tag("ID")
        )
        level.append(element_level)
    # EquipmentClassID follows the nested Equipment, and EquipmentClass
    # follows Equipment in EquipmentInformation.
    for equipment in root.iter(_tag("Equipment")):
        for class_id in equipment.findall(_tag("EquipmentClassID")):
            equipment.append(class_id)
    information = root.find(f"{_tag('DataArea')}/{_tag('EquipmentInformation')}")
    assert information is not None
    for equipment_class in information.findall(_tag("EquipmentClass")):
        information.append(equipment_class)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _property(name: str, value: str) -> dict[str, str]:
    return {"name": name, "value": value}


def test_parse_b2mml_equipment_hierarchy_mapped(samples_dir: Path) -> None:
    events = parse_b2mml(
        _fixed_sample(samples_dir), "equipment.xml", samples_dir / "b2mml" / "xsd"
    )

    assert {e.type for e in events} == {"masterdata.equipment.changed.v1"}
    assert [e.data for e in events] == [
        {"equipment_id": "AcmeMining", "level": "Enterprise"},
        {
            "equipment_id": "AcmeMining.NorthMine",
            "level": "Site",
            "parent": "AcmeMining",
        },
        {
            "equipment_id": "AcmeMining.NorthMine.CrusherPlant",
            "level": "Area",
            "parent": "AcmeMining.NorthMine",
            "classes": ["Crusher.JawCrusher"],
            "properties": [
                _property("DriveType", "Electric"),
                _property("Manufacturer", "Unknown"),
                _property("MaxThroughput", "850"),
            ],
        },
        {
            "equipment_id": "AcmeMining.NorthMine.ConveyorLoop",
            "level": "Area",
            "parent": "AcmeMining.NorthMine",
            "classes": ["Crusher.JawCrusher"],
            "properties": [
                _property("DriveType", "Electric"),
                _property("Manufacturer", "Unknown"),
                _property("MaxThroughput", "750"),
            ],
        },
        {
            "equipment_id": "AcmeMining.NorthMine.WasteStorage",
            "level": "Area",
            "parent": "AcmeMining.NorthMine",
        },
        {
            "equipment_id": "AcmeMining.SouthMine",
            "level": "Site",
            "parent": "AcmeMining",
        },
        {
            "equipment_id": "AcmeMining.SouthMine.ProcessPlant",
            "level": "Area",
            "parent": "AcmeMining.SouthMine",
            "classes": ["Crusher"],
            "properties": [
                _property("DriveType", "Electric"),
                _property("Manufacturer", "Unknown"),
            ],
        },
        {
            "equipment_id": "AcmeMining.Applications",
            "level": "Other",
            "parent": "AcmeMining",
        },
    ]
    assert [e.subject for e in events] == [e.data["equipment_id"] for e in events]
    assert [e.partitionkey for e in events] == [e.subject for e in events]
    assert {e.time for e in events} == {"2026-03-02T06:00:00Z"}


def test_parse_b2mml_equipment_events_match_catalogue(samples_dir: Path) -> None:
    catalogue = Catalogue.load()
    event_type = catalogue.get("masterdata.equipment.changed.v1")
    assert event_type is not None

    events = parse_b2mml(
        _fixed_sample(samples_dir), "equipment.xml", samples_dir / "b2mml" / "xsd"
    )

    for event in events:
        assert event_type.violations(event.data) == []
        assert event.dataschema == event_type.schema_id


def test_parse_b2mml_equipment_noun_with_unit(b2mml_xsd: Path) -> None:
    document = f"""<?xml version="1.0" encoding="UTF-8"?>
<SyncEquipment xmlns="{V0600}" releaseID="V0600">
  <ApplicationArea><CreationDateTime>2026-03-02T06:00:00+01:00</CreationDateTime>
  </ApplicationArea>
  <DataArea>
    <Sync/>
    <Equipment>
      <ID>MX-1</ID>
      <Description>Mixer 1</Description>
      <EquipmentLevel>
        <EquipmentID>MX-1</EquipmentID>
        <EquipmentElementLevel>WorkUnit</EquipmentElementLevel>
      </EquipmentLevel>
      <EquipmentProperty>
        <ID>Volume</ID>
        <Value><ValueString>2.5</ValueString><UnitOfMeasure>m3</UnitOfMeasure></Value>
      </EquipmentProperty>
    </Equipment>
  </DataArea>
</SyncEquipment>""".encode()

    [event] = parse_b2mml(document, "mx-1.xml", b2mml_xsd, plant="P1")

    assert event.data == {
        "equipment_id": "MX-1",
        "name": "Mixer 1",
        "level": "WorkUnit",
        "properties": [{"name": "Volume", "value": "2.5", "unit": "m3"}],
    }
    assert event.time == "2026-03-02T05:00:00Z"
    assert event.plant == "P1"


def test_parse_b2mml_equipment_without_fix_rejected(samples_dir: Path) -> None:
    with pytest.raises(FormatError) as caught:
        parse_b2mml(
            (samples_dir / SAMPLE).read_bytes(),
            "equipment.xml",
            samples_dir / "b2mml" / "xsd",
        )

    assert caught.value.problems[0].message == (
        "breaks the XSD rule: missing required attribute 'releaseID'"
    )
