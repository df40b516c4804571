"""Each event type lands in Tryton with the right quantities, lots and states."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from plantbus.connectors.tryton.client import TrytonClient
from plantbus.connectors.tryton.sink import TrytonSink
from plantbus.errors import PermanentDeliveryError
from plantbus.events.envelope import Event

pytestmark = pytest.mark.tryton

Release = Callable[..., Awaitable[list[str]]]


def shop_event(kind: str, work_order: str, **data: Any) -> Event:
    return Event.create(
        f"production.{kind}.v1",
        "urn:test:mes",
        {"work_order_id": work_order, **data},
        partitionkey=work_order,
    )


def quantity(value: str, unit: str = "u") -> dict[str, str]:
    return {"value": value, "unit": unit}


async def production(client: TrytonClient, number: str) -> dict[str, Any]:
    rows = await client.search_read(
        "production",
        [("number", "=", number)],
        ["state", "inputs", "outputs", "works", "plantbus_event", "warehouse"],
    )
    return rows[0]


async def moves(client: TrytonClient, ids: list[int]) -> list[dict[str, Any]]:
    return await client.read(
        "stock.move",
        ids,
        [
            "state",
            "quantity",
            "product.code",
            "lot.number",
            "unit.symbol",
            "to_location.code",
            "to_location.type",
            "plantbus_event",
        ],
    )


async def test_sink_started_runs_production(
    tryton: TrytonClient, release: Release
) -> None:
    (number,) = await release()
    sink = TrytonSink("tryton", tryton)

    ref = await sink.deliver(
        shop_event("workorder.started", number, started_at="2026-03-01T06:00:00Z")
    )

    record = await production(tryton, number)
    assert ref == f"production,{record['id']}"
    assert record["state"] == "running"
    inputs = await moves(tryton, record["inputs"])
    assert inputs
    assert {move["state"] for move in inputs} == {"cancelled"}


async def test_sink_consumed_posts_done_input_with_lot(
    tryton: TrytonClient, release: Release
) -> None:
    (number,) = await release(item="FG-102")
    sink = TrytonSink("tryton", tryton)
    event = shop_event(
        "material.consumed",
        number,
        item="C-205",
        quantity=quantity("12.5", "kg"),
        lot="P1-C-205-L1",
        consumed_at="2026-03-01T07:00:00Z",
    )

    ref = await sink.deliver(event)

    assert ref is not None and ref.startswith("stock.move,")
    (move,) = await moves(tryton, [int(ref.split(",")[1])])
    assert move["state"] == "done"
    assert move["quantity"] == 12.5
    assert move["product."]["code"] == "C-205"
    assert move["unit."]["symbol"] == "kg"
    assert move["lot."]["number"] == "P1-C-205-L1"
    assert move["plantbus_event"] == event.id
    record = await production(tryton, number)
    assert record["state"] == "running"
    assert int(ref.split(",")[1]) in record["inputs"]
    done_inputs = [
        m for m in await moves(tryton, record["inputs"]) if m["state"] == "done"
    ]
    assert len(done_inputs) == 1


async def test_sink_consumed_creates_new_lot(
    tryton: TrytonClient, release: Release
) -> None:
    (number,) = await release()
    event = shop_event(
        "material.consumed",
        number,
        item="C-202",
        quantity=quantity("2"),
        lot="NEW-LOT-7",
    )

    ref = await TrytonSink("tryton", tryton).deliver(event)

    assert ref is not None
    (move,) = await moves(tryton, [int(ref.split(",")[1])])
    assert move["lot."]["number"] == "NEW-LOT-7"


async def test_sink_progressed_posts_done_cycle(
    tryton: TrytonClient, release: Release
) -> None:
    (number,) = await release()
    event = shop_event(
        "workorder.progressed",
        number,
        operation="assembly",
        quantity=quantity("6"),
        scrap=quantity("1"),
        duration_seconds="90.5",
    )

    ref = await TrytonSink("tryton", tryton).deliver(event)

    assert ref is not None and ref.startswith("production.work.cycle,")
    (cycle,) = await tryton.read(
        "production.work.cycle",
        [int(ref.split(",")[1])],
        [
            "state",
            "duration",
            "plantbus_quantity",
            "plantbus_scrap",
            "work.operation",
            "cost",
        ],
    )
    assert cycle["state"] == "done"
    assert cycle["duration"] == dt.timedelta(seconds=90.5)
    assert cycle["plantbus_quantity"] == 6
    assert cycle["plantbus_scrap"] == 1
    assert cycle["cost"] > 0
    (work,) = await tryton.read(
        "production.work", [cycle["work."]["id"]], ["operation.name"]
    )
    assert work["operation."]["name"] == "Assembly"


async def test_sink_progressed_unknown_operation_is_permanent(
    tryton: TrytonClient, release: Release
) -> None:
    (number,) = await release()
    event = shop_event(
        "workorder.progressed",
        number,
        operation="Welding",
        quantity=quantity("1"),
        duration_seconds="5",
    )

    with pytest.raises(PermanentDeliveryError, match="Welding"):
        await TrytonSink("tryton", tryton).deliver(event)


async def test_sink_completed_finishes_production(
    tryton: TrytonClient, release: Release
) -> None:
    (number,) = await release(quantity="10")
    sink = TrytonSink("tryton", tryton)
    await sink.deliver(
        shop_event(
            "workorder.progressed",
            number,
            operation="Machining",
            quantity=quantity("10"),
            duration_seconds="600",
        )
    )
    event = shop_event(
        "workorder.completed",
        number,
        item="FG-100",
        quantity=quantity("9"),
        scrap=quantity("1"),
        lot="FG-LOT-1",
        completed_at="2026-03-01T14:00:00Z",
    )

    ref = await sink.deliver(event)

    record = await production(tryton, number)
    assert ref == f"production,{record['id']}"
    assert record["state"] == "done"
    assert record["plantbus_event"] == event.id
    outputs = await moves(tryton, record["outputs"])
    goods = [m for m in outputs if m["to_location."]["type"] == "storage"]
    scrap = [m for m in outputs if m["to_location."]["type"] == "lost_found"]
    assert [(m["state"], m["quantity"], m["lot."]["number"]) for m in goods] == [
        ("done", 9.0, "FG-LOT-1")
    ]
    assert [(m["state"], m["quantity"]) for m in scrap] == [("done", 1.0)]
    works = await tryton.read("production.work", record["works"], ["state"])
    assert {work["state"] for work in works} == {"done"}


async def test_sink_goods_after_completion_returns_output(
    tryton: TrytonClient, release: Release
) -> None:
    (number,) = await release()
    sink = TrytonSink("tryton", tryton)
    completed = await sink.deliver(
        shop_event(
            "workorder.completed",
            number,
            item="FG-100",
            quantity=quantity("10"),
            lot="FG-LOT-2",
            completed_at="2026-03-01T14:00:00Z",
        )
    )
    goods = shop_event(
        "goods.produced", number, item="FG-100", quantity=quantity("10"), lot="FG-LOT-2"
    )

    ref = await sink.deliver(goods)

    record = await production(tryton, number)
    assert completed == f"production,{record['id']}"
    assert ref is not None
    assert int(ref.split(",")[1]) in record["outputs"]
    outputs = await moves(tryton, record["outputs"])
    assert [m["quantity"] for m in outputs if m["state"] == "done"] == [10.0]


async def test_sink_goods_before_completion_posts_output(
    tryton: TrytonClient, release: Release
) -> None:
    (number,) = await release(item="FG-104", quantity="5")
    sink = TrytonSink("tryton", tryton)
    goods = shop_event(
        "goods.produced",
        number,
        item="FG-104",
        quantity=quantity("5"),
        lot="FG-LOT-3",
        location="P1-STO",
    )

    ref = await sink.deliver(goods)
    await sink.deliver(
        shop_event(
            "workorder.completed",
            number,
            item="FG-104",
            quantity=quantity("5"),
            completed_at="2026-03-01T14:00:00Z",
        )
    )

    assert ref is not None
    (move,) = await moves(tryton, [int(ref.split(",")[1])])
    assert move["state"] == "done"
    assert move["lot."]["number"] == "FG-LOT-3"
    assert move["to_location."]["code"] == "P1-STO"
    record = await production(tryton, number)
    assert record["state"] == "done"
    outputs = await moves(tryton, record["outputs"])
    assert sum(m["quantity"] for m in outputs if m["state"] == "done") == 5.0


async def test_sink_unknown_type_is_permanent(tryton: TrytonClient) -> None:
    event = Event.create("quality.hold.placed.v1", "urn:test", {"lot": "L1"})

    with pytest.raises(PermanentDeliveryError, match=r"quality\.hold\.placed\.v1"):
        await TrytonSink("tryton", tryton).deliver(event)


async def test_sink_unknown_work_order_is_permanent(tryton: TrytonClient) -> None:
    event = shop_event(
        "workorder.started", "WO-NOPE", started_at="2026-03-01T06:00:00Z"
    )

    with pytest.raises(PermanentDeliveryError, match="WO-NOPE"):
        await TrytonSink("tryton", tryton).deliver(event)


async def stock(client: TrytonClient, code: str, location: str) -> float:
    location_id = (await client.search("stock.location", [("code", "=", location)]))[0]
    product_id = (await client.search("product.product", [("code", "=", code)]))[0]
    context = {**client.context, "locations": [location_id]}
    rows = await client.call(
        "model.product.product.read", [product_id], ["quantity"], context
    )
    return float(rows[0]["quantity"])


async def test_sink_full_order_counts_consumption_once(
    tryton: TrytonClient, release: Release
) -> None:
    (number,) = await release(plant="P2", item="FG-104", quantity="10")
    sink = TrytonSink("tryton", tryton)
    block_before = await stock(tryton, "C-209", "P2-STO")
    bearing_before = await stock(tryton, "C-202", "P2-STO")
    goods_before = await stock(tryton, "FG-104", "P2-STO")

    for event in (
        shop_event("workorder.started", number, started_at="2026-03-01T06:00:00Z"),
        shop_event(
            "material.consumed",
            number,
            item="C-209",
            quantity=quantity("11.5", "kg"),
            lot="P2-C-209-L1",
        ),
        shop_event(
            "material.consumed",
            number,
            item="C-202",
            quantity=quantity("10"),
            lot="P2-C-202-L2",
        ),
        shop_event(
            "workorder.progressed",
            number,
            operation="Machining",
            quantity=quantity("10"),
            duration_seconds="1200",
        ),
        shop_event(
            "workorder.progressed",
            number,
            operation="Test",
            quantity=quantity("9"),
            scrap=quantity("1"),
            duration_seconds="300",
        ),
        shop_event(
            "workorder.completed",
            number,
            item="FG-104",
            quantity=quantity("9"),
            scrap=quantity("1"),
            lot="FG-104-A",
            completed_at="2026-03-01T14:00:00Z",
        ),
        shop_event(
            "goods.produced",
            number,
            item="FG-104",
            quantity=quantity("9"),
            lot="FG-104-A",
        ),
    ):
        await sink.deliver(event)

    # The BOM plans 12 kg and 10 bearings for 10 units; only what the shop
    # floor reported leaves stock.
    assert await stock(tryton, "C-209", "P2-STO") == pytest.approx(block_before - 11.5)
    assert await stock(tryton, "C-202", "P2-STO") == pytest.approx(bearing_before - 10)
    assert await stock(tryton, "FG-104", "P2-STO") == pytest.approx(goods_before + 9)
    record = await production(tryton, number)
    assert record["state"] == "done"
