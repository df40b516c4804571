"""B2MML versions, verbs and document kinds: which are read and how others are named."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from plantbus.errors import ConfigError, FormatError
from plantbus.formats.b2mml import (
    MaterialLine,
    parse_b2mml,
    write_production_schedule,
)

V0600 = "http://www.mesa.org/xml/B2MML-V0600"
KNOWN = (
    "V0401 ('http://www.wbf.org/xml/B2MML-V0401'), V0600 "
    "('http://www.mesa.org/xml/B2MML-V0600'), V0700 ('http://www.mesa.org/xml/B2MML')"
)


def _schedule() -> bytes:
    return write_production_schedule(
        order_id="MO-1",
        product=MaterialLine("FG-1", Decimal("10"), "u"),
        planned_start=datetime(2026, 3, 2, 6, 0, tzinfo=UTC),
        planned_end=datetime(2026, 3, 2, 8, 0, tzinfo=UTC),
        plant="P1",
    )


def _with_root(document: bytes, old: str, new: str) -> bytes:
    return document.replace(f"<{old}".encode(), f"<{new}".encode(), 1).replace(
        f"</{old}>".encode(), f"</{new}>".encode(), 1
    )


def _with_verb(verb: str) -> bytes:
    document = _with_root(
        _schedule(), "ProcessProductionSchedule", f"{verb}ProductionSchedule"
    )
    return document.replace(b"<Process/>", f"<{verb}/>".encode(), 1)


def _rejection(document: bytes, b2mml_xsd: Path) -> tuple[str, int | None, str]:
    with pytest.raises(FormatError) as caught:
        parse_b2mml(document, "doc.xml", b2mml_xsd)
    [problem] = caught.value.problems
    return problem.location, problem.line, problem.message


@pytest.mark.parametrize("verb", ["Process", "Sync", "Show", "Change", "Respond"])
def test_parse_b2mml_state_verbs_mapped(b2mml_xsd: Path, verb: str) -> None:
    [event] = parse_b2mml(_with_verb(verb), "mo-1.xml", b2mml_xsd)

    assert event.type == "production.order.released.v1"
    assert event.data["order_id"] == "MO-1"
    assert event.data["quantity"] == {"value": "10", "unit": "u"}
    assert event.data["plant"] == "P1"


def test_parse_b2mml_bare_noun_maps_order(b2mml_xsd: Path) -> None:
    document = f"""<?xml version="1.0" encoding="UTF-8"?>
<ProductionSchedule xmlns="{V0600}">
  <ProductionRequest>
    <ID>MO-2</ID>
    <StartTime>2026-03-02T06:00:00Z</StartTime>
    <SegmentRequirement>
      <MaterialRequirement>
        <MaterialDefinitionID>FG-2</MaterialDefinitionID>
        <MaterialUse>Produced</MaterialUse>
        <Quantity><QuantityString>4</QuantityString>
          <UnitOfMeasure>u</UnitOfMeasure></Quantity>
      </MaterialRequirement>
    </SegmentRequirement>
  </ProductionRequest>
</ProductionSchedule>
""".encode()

    [event] = parse_b2mml(document, "mo-2.xml", b2mml_xsd, plant="P2")

    assert event.data == {
        "order_id": "MO-2",
        "item": "FG-2",
        "quantity": {"value": "4", "unit": "u"},
        "plant": "P2",
        "planned_start": "2026-03-02T06:00:00Z",
    }
    # Without an ApplicationArea there is no creation time for the event.
    assert event.time is None


@pytest.mark.parametrize(
    ("verb", "reason"),
    [
        (
            "Get",
            "requests data from the receiver and carries none to map; plantbus "
            "responds to no B2MML Get requests, so send the Show or Sync "
            "document that carries the data",
        ),
        (
            "Cancel",
            "requests to cancel what it names; plantbus has no cancellation event "
            "for B2MML documents, and it rejects the document rather than read "
            "it as a new ProductionSchedule",
        ),
        (
            "Acknowledge",
            "is a receipt for a document sent earlier; plantbus maps the "
            "original Process or Sync document, and a receipt would repeat its "
            "events",
        ),
    ],
)
def test_parse_b2mml_other_verbs_rejected(
    b2mml_xsd: Path, verb: str, reason: str
) -> None:
    location, line, message = _rejection(_with_verb(verb), b2mml_xsd)

    assert location == f"/{verb}ProductionSchedule"
    assert line == 2
    assert message == (
        f"is a B2MML V0600 {verb} ProductionSchedule document, which {reason} "
        f"(plantbus maps documents with the verbs Change, Process, Respond, "
        f"Show, Sync or none)"
    )


@pytest.mark.parametrize(
    "namespace",
    ["http://www.mesa.org/xml/B2MML-V0500", "http://www.mesa.org/xml/B2MML-V0800"],
)
def test_parse_b2mml_unexpected_version_named(b2mml_xsd: Path, namespace: str) -> None:
    document = _schedule().replace(V0600.encode(), namespace.encode())

    location, line, message = _rejection(document, b2mml_xsd)

    assert (location, line) == ("/ProcessProductionSchedule", 2)
    assert message == (
        f"has the namespace {namespace!r}, a B2MML or BatchML version that "
        f"plantbus does not read; plantbus reads the B2MML versions {KNOWN}, so "
        f"ask the sender for one of these versions"
    )


def test_parse_b2mml_foreign_namespace_named(b2mml_xsd: Path) -> None:
    document = _schedule().replace(V0600.encode(), b"urn:example:orders")

    _, _, message = _rejection(document, b2mml_xsd)

    assert message == (
        f"has the namespace 'urn:example:orders', which is not a B2MML "
        f"namespace; expected one of {KNOWN}"
    )


def test_parse_b2mml_v0700_schedule_named_as_replaced(b2mml_xsd: Path) -> None:
    document = _schedule().replace(V0600.encode(), b"http://www.mesa.org/xml/B2MML")

    _, _, message = _rejection(document, b2mml_xsd)

    assert message == (
        "is a ProductionSchedule document in the B2MML V0700 namespace, but "
        "B2MML V0700 has no ProductionSchedule: it was replaced by "
        "OperationsSchedule, which plantbus does not read yet; send the "
        "document in the V0600 namespace"
    )


def test_parse_b2mml_unmapped_noun_named(b2mml_xsd: Path) -> None:
    document = _with_root(
        _schedule(), "ProcessProductionSchedule", "ProcessPersonnelInformation"
    )

    location, _, message = _rejection(document, b2mml_xsd)

    assert location == "/ProcessPersonnelInformation"
    assert message == (
        "is a B2MML V0600 PersonnelInformation document; plantbus does not read "
        "this document kind (it reads ProductionSchedule, ProductionPerformance, "
        "MaterialInformation, MaterialDefinition, MaterialLot, "
        "EquipmentInformation, Equipment)"
    )


def test_parse_b2mml_version_xsd_missing(b2mml_xsd: Path, tmp_path: Path) -> None:
    # A folder with only V0600: a V0700 document needs the V0700 set.
    (tmp_path / "V0600").symlink_to(b2mml_xsd / "V0600")
    document = (
        b'<SyncMaterialLot xmlns="http://www.mesa.org/xml/B2MML" releaseID="1">'
        b"<ApplicationArea><CreationDateTime>2026-03-02T06:00:00Z"
        b"</CreationDateTime></ApplicationArea><DataArea><Sync/><MaterialLot>"
        b"<ID>L1</ID></MaterialLot></DataArea></SyncMaterialLot>"
    )

    with pytest.raises(ConfigError) as caught:
        parse_b2mml(document, "l1.xml", tmp_path)

    assert "has no 'B2MML-Material.xsd'" in str(caught.value)
    assert "official B2MML V0700 XSD files" in str(caught.value)
