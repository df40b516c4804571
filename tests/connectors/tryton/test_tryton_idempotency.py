"""Delivering the same event twice, or concurrently, posts it once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from plantbus.connectors.tryton.client import TrytonClient
from plantbus.connectors.tryton.sink import TrytonSink
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


async def posted(client: TrytonClient, model: str, event_id: str) -> list[int]:
    return await client.search(model, [("plantbus_event", "=", event_id)])


async def test_consumed_twice_posts_once(
    tryton: TrytonClient, release: Release
) -> None:
    (number,) = await release()
    sink = TrytonSink("tryton", tryton)
    event = shop_event(
        "material.consumed",
        number,
        item="C-201",
        quantity={"value": "1", "unit": "u"},
        lot="P1-C-201-L2",
    )

    first = await sink.deliver(event)
    second = await sink.deliver(event)

    assert first == second
    assert len(await posted(tryton, "stock.move", event.id)) == 1


async def test_consumed_concurrently_posts_once(
    tryton: TrytonClient, release: Release
) -> None:
    (number,) = await release()
    sink = TrytonSink("tryton", tryton)
    event = shop_event(
        "material.consumed", number, item="C-200", quantity={"value": "3", "unit": "u"}
    )

    refs = await asyncio.gather(*(sink.deliver(event) for _ in range(6)))

    assert len(set(refs)) == 1
    ids = await posted(tryton, "stock.move", event.id)
    assert len(ids) == 1
    (move,) = await tryton.read("stock.move", ids, ["state", "quantity"])
    assert move["state"] == "done"
    assert move["quantity"] == 3.0


async def test_consumed_concurrently_from_two_sinks_posts_once(
    tryton: TrytonClient, release: Release, tryton_server: Any
) -> None:
    (number,) = await release()
    other = TrytonClient(
        tryton.url, tryton.database, tryton.login_name, tryton._password
    )
    await other.start()
    event = shop_event(
        "material.consumed", number, item="C-203", quantity={"value": "1", "unit": "u"}
    )
    try:
        refs = await asyncio.gather(
            *(
                TrytonSink("tryton", client).deliver(event)
                for client in (tryton, other, tryton, other)
            )
        )
    finally:
        await other.close()

    assert len(set(refs)) == 1
    assert len(await posted(tryton, "stock.move", event.id)) == 1


async def test_progressed_concurrently_posts_once(
    tryton: TrytonClient, release: Release
) -> None:
    (number,) = await release()
    sink = TrytonSink("tryton", tryton)
    event = shop_event(
        "workorder.progressed",
        number,
        operation="Test",
        quantity={"value": "2", "unit": "u"},
        duration_seconds="30",
    )

    refs = await asyncio.gather(*(sink.deliver(event) for _ in range(5)))
    again = await sink.deliver(event)

    assert len(set(refs)) == 1
    assert again == refs[0]
    ids = await posted(tryton, "production.work.cycle", event.id)
    assert len(ids) == 1
    (cycle,) = await tryton.read("production.work.cycle", ids, ["state"])
    assert cycle["state"] == "done"


async def test_completed_concurrently_posts_once(
    tryton: TrytonClient, release: Release
) -> None:
    (number,) = await release(quantity="4")
    sink = TrytonSink("tryton", tryton)
    event = shop_event(
        "workorder.completed",
        number,
        item="FG-100",
        quantity={"value": "4", "unit": "u"},
        scrap={"value": "1", "unit": "u"},
        completed_at="2026-03-01T14:00:00Z",
    )

    refs = await asyncio.gather(*(sink.deliver(event) for _ in range(4)))
    again = await sink.deliver(event)

    assert len(set(refs)) == 1
    assert again == refs[0]
    rows = await tryton.search_read(
        "production", [("number", "=", number)], ["state", "outputs", "works"]
    )
    assert rows[0]["state"] == "done"
    outputs = await tryton.read("stock.move", rows[0]["outputs"], ["state", "quantity"])
    assert sorted(m["quantity"] for m in outputs if m["state"] == "done") == [1.0, 4.0]
    cycles = await tryton.search(
        "production.work.cycle", [("work", "in", rows[0]["works"])]
    )
    assert len(cycles) == len(rows[0]["works"])


async def test_goods_produced_twice_posts_once(
    tryton: TrytonClient, release: Release
) -> None:
    (number,) = await release(item="FG-101", quantity="3")
    sink = TrytonSink("tryton", tryton)
    event = shop_event(
        "goods.produced",
        number,
        item="FG-101",
        quantity={"value": "3", "unit": "u"},
        lot="FG-LOT-9",
    )

    refs = await asyncio.gather(*(sink.deliver(event) for _ in range(3)))
    again = await sink.deliver(event)

    assert len(set(refs)) == 1
    assert again == refs[0]
    assert len(await posted(tryton, "stock.move", event.id)) == 1
