"""Material definitions and lots to item and lot events, in V0600 and V0700."""

from __future__ import annotations

from pathlib import Path

import pytest

from plantbus.errors import FormatError
from plantbus.events.catalogue import Catalogue
from plantbus.formats.b2mml import parse_b2mml

V0600 = "http://www.mesa.org/xml/B2MML-V0600"
V0700 = "http://www.mesa.org/xml/B2MML"

V0700_INFORMATION = f"""<?xml version="1.0" encoding="UTF-8"?>
<SyncMaterialInformation xmlns="{V0700}" releaseID="V0700">
  <ApplicationArea>
    <CreationDateTime>2026-03-02T06:00:00Z</CreationDateTime>
  </ApplicationArea>
  <DataArea>
    <Sync/>
    <MaterialInformation>
      <ID>MI-1</ID>
      <MaterialDefinition>
        <ID>RM-7</ID>
        <Description>Resin</Description>
        <MaterialDefinitionProperty>
          <ID>BaseUnitOfMeasure</ID>
          <Value><ValueString>kg</ValueString></Value>
        </MaterialDefinitionProperty>
      </MaterialDefinition>
      <MaterialLot>
        <ID>LOT-9</ID>
        <MaterialDefinitionID>RM-7</MaterialDefinitionID>
        <Status>Released</Status>
        <MaterialSubLot>
          <ID>LOT-9-A</ID>
          <Quantity>
            <QuantityString>20</QuantityString>
            <UnitOfMeasure>kg</UnitOfMeasure>
          </Quantity>
        </MaterialSubLot>
        <StorageLocation>
          <Location>WH-1</Location>
          <LocationType>Equipment</LocationType>
        </StorageLocation>
        <Quantity>
          <QuantityString>120.5</QuantityString>
          <UnitOfMeasure>kg</UnitOfMeasure>
        </Quantity>
      </MaterialLot>
    </MaterialInformation>
  </DataArea>
</SyncMaterialInformation>
"""


def _v0600_lot(quantity: str = "12.000", unit: str = "kg", expiry: str = "") -> bytes:
    """Build a V0600 ProcessMaterialLot with a nested sublot."""
    unit_element = f"<UnitOfMeasure>{unit}</UnitOfMeasure>" if unit else ""
    expiry_property = (
        f"""<MaterialLotProperty><ID>ExpirationDate</ID>
          <Value><ValueString>{expiry}</ValueString></Value>
        </MaterialLotProperty>"""
        if expiry
        else ""
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<ProcessMaterialLot xmlns="{V0600}" releaseID="V0600">
  <ApplicationArea>
    <CreationDateTime>2026-03-02T08:00:00+01:00</CreationDateTime>
  </ApplicationArea>
  <DataArea>
    <Process/>
    <MaterialLot>
      <ID>L-100</ID>
      <Location>
        <EquipmentID>STORE-2</EquipmentID>
        <EquipmentElementLevel>StorageZone</EquipmentElementLevel>
      </Location>
      <MaterialDefinitionID>FG-1</MaterialDefinitionID>
      <Status>Blocked</Status>
      {expiry_property}
      <MaterialSubLot>
        <ID>L-100-1</ID>
        <StorageLocation>BIN-7</StorageLocation>
        <Quantity><QuantityString>{quantity}</QuantityString>{unit_element}</Quantity>
        <MaterialSubLot>
          <ID>L-100-1-a</ID>
          <Quantity><QuantityString>2</QuantityString><UnitOfMeasure>kg</UnitOfMeasure>
          </Quantity>
        </MaterialSubLot>
      </MaterialSubLot>
    </MaterialLot>
  </DataArea>
</ProcessMaterialLot>
""".encode()


def test_parse_b2mml_v0700_material_information(
    b2mml_xsd: Path,
) -> None:
    events = parse_b2mml(V0700_INFORMATION.encode(), "mi-1.xml", b2mml_xsd)

    assert [(e.type, e.data) for e in events] == [
        (
            "masterdata.item.changed.v1",
            {"item": "RM-7", "name": "Resin", "uom": "kg"},
        ),
        (
            "inventory.lot.changed.v1",
            {
                "lot": "LOT-9",
                "item": "RM-7",
                "status": "Released",
                "quantity": {"value": "120.5", "unit": "kg"},
                "location": "WH-1",
            },
        ),
        (
            "inventory.lot.changed.v1",
            {
                "lot": "LOT-9",
                "item": "RM-7",
                "sublot": "LOT-9-A",
                "quantity": {"value": "20", "unit": "kg"},
            },
        ),
    ]
    assert {e.time for e in events} == {"2026-03-02T06:00:00Z"}
    assert [e.partitionkey for e in events] == ["RM-7", "LOT-9", "LOT-9"]


def test_parse_b2mml_lot_nested_sublots(b2mml_xsd: Path) -> None:
    events = parse_b2mml(
        _v0600_lot(expiry="2027-01-31T00:00:00+01:00"), "lot.xml", b2mml_xsd
    )

    assert [e.data for e in events] == [
        {
            "lot": "L-100",
            "item": "FG-1",
            "status": "Blocked",
            "location": "STORE-2",
            "expires_at": "2027-01-30T23:00:00Z",
        },
        {
            "lot": "L-100",
            "item": "FG-1",
            "sublot": "L-100-1",
            "quantity": {"value": "12.000", "unit": "kg"},
            "location": "BIN-7",
        },
        {
            "lot": "L-100",
            "item": "FG-1",
            "sublot": "L-100-1-a",
            "quantity": {"value": "2", "unit": "kg"},
        },
    ]
    assert {e.time for e in events} == {"2026-03-02T07:00:00Z"}
    assert len({e.id for e in events}) == 3


def test_parse_b2mml_lot_events_match_catalogue(b2mml_xsd: Path) -> None:
    catalogue = Catalogue.load()

    events = parse_b2mml(_v0600_lot(), "lot.xml", b2mml_xsd)
    events += parse_b2mml(V0700_INFORMATION.encode(), "mi-1.xml", b2mml_xsd)

    for event in events:
        event_type = catalogue.get(event.type)
        assert event_type is not None
        assert event_type.violations(event.data) == []


@pytest.mark.parametrize(
    ("quantity", "unit", "expiry", "location", "message"),
    [
        (
            "-3",
            "kg",
            "",
            "/ProcessMaterialLot/DataArea/MaterialLot/MaterialSubLot/Quantity"
            "/QuantityString",
            "'-3' is negative; the quantity of MaterialSubLot 'L-100-1' must be "
            "zero or more",
        ),
        (
            "12",
            "",
            "",
            "/ProcessMaterialLot/DataArea/MaterialLot/MaterialSubLot/Quantity",
            "has no UnitOfMeasure; plantbus quantities always carry a unit, so "
            "add one such as 'kg'",
        ),
        (
            "12",
            "kg",
            "2027-01-31",
            "/ProcessMaterialLot/DataArea/MaterialLot/MaterialLotProperty/Value",
            "'2027-01-31' is not an xs:dateTime plantbus can read; expected a "
            "value such as '2026-03-01T06:00:00Z'",
        ),
    ],
    ids=["negative", "no-unit", "expiry-date-only"],
)
def test_parse_b2mml_lot_bad_value_rejected(
    b2mml_xsd: Path,
    quantity: str,
    unit: str,
    expiry: str,
    location: str,
    message: str,
) -> None:
    with pytest.raises(FormatError) as caught:
        parse_b2mml(_v0600_lot(quantity, unit, expiry), "lot.xml", b2mml_xsd)

    [problem] = caught.value.problems
    assert problem.location == location
    assert problem.message == message
    assert problem.line is not None


def test_parse_b2mml_definition_without_unit_rejected(b2mml_xsd: Path) -> None:
    document = f"""<?xml version="1.0" encoding="UTF-8"?>
<SyncMaterialDefinition xmlns="{V0600}" releaseID="V0600">
  <ApplicationArea>
    <CreationDateTime>2026-03-02T06:00:00Z</CreationDateTime>
  </ApplicationArea>
  <DataArea>
    <Sync/>
    <MaterialDefinition>
      <ID>RM-9</ID>
      <MaterialDefinitionProperty>
        <ID>Density</ID>
        <Value><ValueString>1.2</ValueString><UnitOfMeasure>kg/l</UnitOfMeasure></Value>
      </MaterialDefinitionProperty>
    </MaterialDefinition>
  </DataArea>
</SyncMaterialDefinition>
""".encode()

    with pytest.raises(FormatError) as caught:
        parse_b2mml(document, "rm-9.xml", b2mml_xsd)

    [problem] = caught.value.problems
    assert problem.location == "/SyncMaterialDefinition/DataArea/MaterialDefinition"
    assert problem.line == 8
    assert problem.message == (
        "'RM-9' names no unit of measure; add a MaterialDefinitionProperty with "
        "the ID 'BaseUnitOfMeasure' whose ValueString is the unit, such as 'kg', "
        "because the item master needs one"
    )
