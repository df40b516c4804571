"""Key parking: a dead letter holds back its key's later events, in log order."""

from __future__ import annotations

import pytest

from plantbus.admin import AdminService
from plantbus.config import HubConfig
from plantbus.connectors.base import Sink
from plantbus.errors import PermanentDeliveryError
from plantbus.events.envelope import Event
from plantbus.pipeline import parking
from plantbus.state.store import DeadLetterFilter

from .conftest import PIPELINE, make_runtime, progressed, run_until


class SelectiveSink(Sink):
    """Reject the listed event ids permanently until `fixed` is set."""

    def __init__(self, failing: set[str]) -> None:
        self.name = "erp"
        self.failing = failing
        self.delivered: list[Event] = []

    async def deliver(self, event: Event) -> str | None:
        if event.id in self.failing:
            raise PermanentDeliveryError(
                f"work order {event.data['work_order_id']} is closed"
            )
        self.delivered.append(event)
        return f"erp:{event.id}"

    def order_of(self, key: str) -> list[str]:
        return [e.data["duration_seconds"] for e in self.delivered if e.key == key]


async def _letters(state, status: str | None):
    return await state.dead_letters(DeadLetterFilter(status=status))


async def _stream(log, keys: dict[str, int]) -> dict[str, list[Event]]:
    events = {
        key: [progressed(key, n) for n in range(1, count + 1)]
        for key, count in keys.items()
    }
    # Interleave the keys as a plant would.
    longest = max(keys.values())
    batch = [events[key][n] for n in range(longest) for key in keys if n < keys[key]]
    await log.append(batch)
    return events


async def _park_first(stores, sink: SelectiveSink) -> None:
    """Run until WO1's first event is a dead letter and its 2 later ones are parked."""
    log, state = stores

    async def settled() -> bool:
        return (
            len(await _letters(state, "parked")) == 2 and len(sink.order_of("WO2")) == 3
        )

    await run_until(make_runtime(log, state, sink), settled)


async def test_parking_blocks_later_events_of_dead_key(stores) -> None:
    log, state = stores
    events = await _stream(log, {"WO1": 3, "WO2": 3})
    sink = SelectiveSink({events["WO1"][0].id})

    await _park_first(stores, sink)

    # WO2 flowed; nothing of WO1 reached the target.
    assert sink.order_of("WO1") == []
    assert sink.order_of("WO2") == ["1", "2", "3"]
    (blocker,) = await _letters(state, "open")
    assert blocker.event_id == events["WO1"][0].id
    parked = await _letters(state, "parked")
    assert [p.event_id for p in parked] == [e.id for e in events["WO1"][1:]]
    assert parked[0].details["blocked_by"] == blocker.id
    assert "dead letter 1 of the same partition key 'WO1'" in parked[0].error
    assert await state.parked_keys(PIPELINE) == {"WO1": blocker.id}


async def test_parking_releases_in_log_order_after_redrive(
    stores, config: HubConfig
) -> None:
    log, state = stores
    events = await _stream(log, {"WO1": 3, "WO2": 3})
    sink = SelectiveSink({events["WO1"][0].id})
    await _park_first(stores, sink)

    sink.failing.clear()
    await AdminService(state, config).redrive(DeadLetterFilter(ids=[1]), actor="t")
    # A new event of WO1 appended meanwhile must come after the held ones.
    late = progressed("WO1", 4)
    await log.append([late])

    async def released() -> bool:
        return len(sink.order_of("WO1")) == 4

    await run_until(make_runtime(log, state, sink), released)

    assert sink.order_of("WO1") == ["1", "2", "3", "4"]
    assert await state.parked_keys(PIPELINE) == {}
    assert await _letters(state, "parked") == []
    assert await _letters(state, "open") == []
    outcomes = {
        letter.event_id: letter.details["redrive_outcome"]
        for letter in await _letters(state, "redriven")
    }
    assert outcomes[events["WO1"][1].id] == (
        "released in log order after its key's blocker"
    )


async def test_parking_releases_after_discard(stores, config: HubConfig) -> None:
    log, state = stores
    events = await _stream(log, {"WO1": 3, "WO2": 3})
    sink = SelectiveSink({events["WO1"][0].id})
    await _park_first(stores, sink)

    await AdminService(state, config).discard(
        DeadLetterFilter(ids=[1]), actor="t", reason="order cancelled in the ERP"
    )

    async def released() -> bool:
        return len(sink.order_of("WO1")) == 2

    await run_until(make_runtime(log, state, sink), released)

    # The discarded event is skipped for good; the held ones follow in order.
    assert sink.order_of("WO1") == ["2", "3"]
    assert await state.parked_keys(PIPELINE) == {}


async def test_parking_moves_to_new_blocker_when_released_event_fails(
    stores, config: HubConfig
) -> None:
    log, state = stores
    events = await _stream(log, {"WO1": 4, "WO2": 1})
    first, second = events["WO1"][0], events["WO1"][1]
    sink = SelectiveSink({first.id, second.id})

    async def parked() -> bool:
        return len(await _letters(state, "parked")) == 3

    await run_until(make_runtime(log, state, sink), parked)
    sink.failing.discard(first.id)
    await AdminService(state, config).redrive(DeadLetterFilter(ids=[1]), actor="t")

    async def moved() -> bool:
        blockers = await state.parked_keys(PIPELINE)
        return blockers.get("WO1", 1) != 1 and len(await _letters(state, "parked")) == 2

    await run_until(make_runtime(log, state, sink), moved)

    # The first went out; the second failed again and holds the last two back.
    assert sink.order_of("WO1") == ["1"]
    (new_blocker,) = await _letters(state, "open")
    assert new_blocker.event_id == second.id
    assert await state.parked_keys(PIPELINE) == {"WO1": new_blocker.id}
    held = [p.event_id for p in await _letters(state, "parked")]
    assert held == [e.id for e in events["WO1"][2:]]


async def test_parking_survives_restart(stores) -> None:
    log, state = stores
    events = await _stream(log, {"WO1": 3, "WO2": 3})
    sink = SelectiveSink({events["WO1"][0].id})
    await _park_first(stores, sink)

    # A new start reads the parked key from the state store.
    await log.append([progressed("WO1", 4)])

    async def held() -> bool:
        return len(await _letters(state, "parked")) == 3

    await run_until(make_runtime(log, state, sink), held)
    assert sink.order_of("WO1") == []


async def test_parking_off_lets_later_events_flow(stores) -> None:
    log, state = stores
    events = await _stream(log, {"WO1": 3})
    sink = SelectiveSink({events["WO1"][0].id})

    async def flowed() -> bool:
        return len(sink.order_of("WO1")) == 2

    await run_until(make_runtime(log, state, sink, park_keys=False), flowed)
    assert sink.order_of("WO1") == ["2", "3"]
    assert await _letters(state, "parked") == []


async def test_parking_release_reads_all_pages(
    stores, config: HubConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, state = stores
    events = await _stream(log, {"WO1": 3, "WO2": 3, "WO3": 3})
    sink = SelectiveSink({events[key][0].id for key in events})
    # One letter per page, so WO3's parked letters are on later pages.
    monkeypatch.setattr(parking, "PAGE_SIZE", 1)

    async def all_parked() -> bool:
        return len(await _letters(state, "parked")) == 6

    await run_until(make_runtime(log, state, sink), all_parked)
    (wo3_blocker,) = [
        letter
        for letter in await _letters(state, "open")
        if letter.event_id == events["WO3"][0].id
    ]
    await AdminService(state, config).discard(
        DeadLetterFilter(ids=[wo3_blocker.id]), actor="t", reason="cancelled"
    )

    async def released() -> bool:
        return len(sink.order_of("WO3")) == 2

    await run_until(make_runtime(log, state, sink), released)

    assert sink.order_of("WO3") == ["2", "3"]
    assert "WO3" not in await state.parked_keys(PIPELINE)
