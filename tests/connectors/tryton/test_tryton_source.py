"""The order source publishes released Tryton productions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import pytest

from plantbus.backbone.log import Appended
from plantbus.connectors.tryton.client import TrytonClient
from plantbus.connectors.tryton.source import TrytonOrderSource
from plantbus.events.catalogue import Catalogue
from plantbus.events.envelope import Event, parse_time
from plantbus.state.dead_letters import DeadLetter

pytestmark = pytest.mark.tryton


class Collector:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.rejected: list[DeadLetter] = []

    async def ingest(self, events: Sequence[Event]) -> list[Appended]:
        self.events.extend(events)
        return [Appended(e.id, i, 0, False) for i, e in enumerate(events)]

    async def reject(self, letter: DeadLetter) -> None:
        self.rejected.append(letter)


async def test_source_publishes_released_orders(
    tryton: TrytonClient,
    release: Callable[..., Awaitable[list[str]]],
    tmp_path: Path,
) -> None:
    numbers = await release("P2", 2, item="FG-102", quantity="4")
    source = TrytonOrderSource("orders", tryton, cursor_file=tmp_path / "cursor.json")
    collector = Collector()

    await source.poll(collector.ingest, collector.reject)

    mine = {
        e.data["order_id"]: e for e in collector.events if e.data["order_id"] in numbers
    }
    assert sorted(mine) == sorted(numbers)
    event = mine[numbers[0]]
    assert event.type == "production.order.released.v1"
    assert event.data["plant"] == "P2"
    assert event.data["item"] == "FG-102"
    assert event.data["quantity"] == {"value": "4", "unit": "u"}
    assert event.data["bom"] == "BOM-FG-102"
    assert event.data["routing"] == "Routing FG-102"
    assert parse_time(event.data["planned_start"]).utcoffset().total_seconds() == 0
    assert event.partitionkey == numbers[0]
    assert collector.rejected == []
    assert (tmp_path / "cursor.json").exists()


async def test_source_events_match_catalogue_schema(
    tryton: TrytonClient, release: Callable[..., Awaitable[list[str]]]
) -> None:
    await release("P1", 1, item="FG-104")
    collector = Collector()

    await TrytonOrderSource("orders", tryton).poll(collector.ingest, collector.reject)

    event_type = Catalogue.load().get("production.order.released.v1")
    assert event_type is not None
    for event in collector.events:
        assert event_type.violations(event.data) == []
        assert Event.from_dict(event.to_dict()).id == event.id


async def test_source_second_poll_publishes_nothing_new(
    tryton: TrytonClient, release: Callable[..., Awaitable[list[str]]]
) -> None:
    await release("P1", 1)
    source = TrytonOrderSource("orders", tryton)
    collector = Collector()
    await source.poll(collector.ingest, collector.reject)
    first = len(collector.events)

    await source.poll(collector.ingest, collector.reject)

    assert first >= 1
    assert len(collector.events) == first


async def test_source_event_ids_stable_across_sources(
    tryton: TrytonClient, release: Callable[..., Awaitable[list[str]]]
) -> None:
    await release("P1", 1)
    first, second = Collector(), Collector()

    await TrytonOrderSource("orders", tryton).poll(first.ingest, first.reject)
    await TrytonOrderSource("orders", tryton).poll(second.ingest, second.reject)

    assert [e.id for e in first.events] == [e.id for e in second.events]
