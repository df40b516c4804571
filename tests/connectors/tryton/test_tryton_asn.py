"""A received ASN becomes one draft supplier shipment in Tryton, however often sent."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from plantbus.connectors.tryton.client import TrytonClient
from plantbus.connectors.tryton.sink import TrytonSink
from plantbus.errors import PermanentDeliveryError
from plantbus.events.envelope import Event
from plantbus.formats.x12 import read_x12

pytestmark = pytest.mark.tryton


def ship_notice(supplier: str, asn_id: str, *, item: str = "C-205") -> Event:
    """Read a small 856 with the real X12 reader and return its event."""
    control = f"{uuid.uuid4().int % 10**9:09d}"
    isa = "*".join(
        [
            "ISA", "00", " " * 10, "00", " " * 10, "ZZ", "SUPPLIER".ljust(15),
            "ZZ", "PLANTBUS".ljust(15), "260301", "0930", "^", "00501", control,
            "0", "P", ">",
        ]
    )  # fmt: skip
    body = [
        f"BSN*00*{asn_id}*20260301*0930",
        "DTM*017*20260305*1400",
        "HL*1**S",
        f"N1*SU*Supplier {supplier}*92*{supplier}",
        "HL*2*1*O",
        "PRF*PO-1",
        "HL*3*2*I",
        f"LIN*1*BP*{item}*LT*{asn_id}-LOT",
        "SN1**12.5*KG",
        "HL*4*2*I",
        "LIN*2*BP*C-200",
        "SN1**4*EA",
    ]
    segments = [
        isa,
        "GS*SH*SUPPLIER*PLANTBUS*20260301*0930*7*X*005010",
        "ST*856*0001",
        *body,
        f"SE*{len(body) + 2}*0001",
        "GE*1*7",
        f"IEA*1*{control}",
    ]
    data = "".join(s + "~\n" for s in segments).encode()
    outcome = read_x12(data, "asn.x12", source="urn:test:edi", plant="P1")
    assert outcome.rejections == []
    (event,) = outcome.events
    return event


@pytest.fixture
async def supplier(tryton: TrytonClient) -> str:
    """Create a supplier party with a unique code and return the code."""
    code = f"SUP-{uuid.uuid4().hex[:8]}"
    await tryton.create("party.party", [{"name": f"Supplier {code}", "code": code}])
    return code


async def shipments(client: TrytonClient, event_id: str) -> list[dict[str, Any]]:
    return await client.search_read(
        "stock.shipment.in",
        [("plantbus_event", "=", event_id)],
        [
            "state",
            "reference",
            "supplier.code",
            "warehouse.code",
            "planned_date",
            "incoming_moves",
        ],
    )


async def test_tryton_asn_creates_draft_shipment(
    tryton: TrytonClient, supplier: str
) -> None:
    asn_id = f"ASN-{uuid.uuid4().hex[:8]}"
    event = ship_notice(supplier, asn_id)

    ref = await TrytonSink("tryton", tryton).deliver(event)

    (shipment,) = await shipments(tryton, event.id)
    assert ref == f"stock.shipment.in,{shipment['id']}"
    assert shipment["state"] == "draft"
    assert shipment["reference"] == asn_id
    assert shipment["supplier."]["code"] == supplier
    assert shipment["warehouse."]["code"] == "P1"
    assert str(shipment["planned_date"]) == "2026-03-05"
    moves = await tryton.read(
        "stock.move",
        shipment["incoming_moves"],
        [
            "product.code",
            "quantity",
            "unit.symbol",
            "lot.number",
            "from_location.type",
            "to_location.code",
            "state",
        ],
    )
    by_item = {move["product."]["code"]: move for move in moves}
    assert sorted(by_item) == ["C-200", "C-205"]
    assert by_item["C-205"]["quantity"] == 12.5
    assert by_item["C-205"]["unit."]["symbol"] == "kg"
    assert by_item["C-205"]["lot."]["number"] == f"{asn_id}-LOT"
    assert by_item["C-200"]["quantity"] == 4.0
    assert by_item["C-200"]["unit."]["symbol"] == "u"
    assert by_item["C-200"]["lot."] is None
    for move in moves:
        assert move["from_location."]["type"] == "supplier"
        assert move["to_location."]["code"] == "P1-IN"
        assert move["state"] == "draft"


async def test_tryton_asn_twice_one_shipment(
    tryton: TrytonClient, supplier: str
) -> None:
    event = ship_notice(supplier, f"ASN-{uuid.uuid4().hex[:8]}")
    sink = TrytonSink("tryton", tryton)

    first = await sink.deliver(event)
    second = await sink.deliver(event)

    assert first == second
    assert len(await shipments(tryton, event.id)) == 1


async def test_tryton_asn_concurrently_one_shipment(
    tryton: TrytonClient, supplier: str
) -> None:
    event = ship_notice(supplier, f"ASN-{uuid.uuid4().hex[:8]}")
    sink = TrytonSink("tryton", tryton)

    refs = await asyncio.gather(*(sink.deliver(event) for _ in range(6)))

    assert len(set(refs)) == 1
    (shipment,) = await shipments(tryton, event.id)
    assert len(shipment["incoming_moves"]) == 2


async def test_tryton_asn_unknown_supplier_is_permanent(tryton: TrytonClient) -> None:
    code = f"NOBODY-{uuid.uuid4().hex[:8]}"
    event = ship_notice(code, f"ASN-{uuid.uuid4().hex[:8]}")

    with pytest.raises(PermanentDeliveryError) as caught:
        await TrytonSink("tryton", tryton).deliver(event)

    message = str(caught.value)
    assert f"field `data.supplier` is {code!r}" in message
    assert "create the supplier party" in message
    assert await shipments(tryton, event.id) == []


async def test_tryton_asn_unknown_item_is_permanent(
    tryton: TrytonClient, supplier: str
) -> None:
    event = ship_notice(supplier, f"ASN-{uuid.uuid4().hex[:8]}", item="X-999")

    with pytest.raises(PermanentDeliveryError) as caught:
        await TrytonSink("tryton", tryton).deliver(event)

    assert "field `data.lines[0].item` is 'X-999'" in str(caught.value)
    assert await shipments(tryton, event.id) == []


def test_tryton_asn_event_time_is_document_date() -> None:
    event = ship_notice("SUP-1", "ASN-1")

    assert event.time == "2026-03-01T09:30:00Z"
    assert event.plant == "P1"
