"""The pipeline runtime against the real SQLite log and state store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from plantbus.backbone.sqlite import SqliteLog
from plantbus.config.model import MapOptions, RetryConfig
from plantbus.connectors.base import Sink
from plantbus.connectors.memory import MemorySink
from plantbus.errors import PermanentDeliveryError, RetryableDeliveryError
from plantbus.events.catalogue import Catalogue
from plantbus.events.envelope import Event
from plantbus.pipeline.delivery import Deliverer
from plantbus.pipeline.runtime import PipelineRuntime
from plantbus.pipeline.steps import FilterStep, MapStep, Step, ValidateStep
from plantbus.state.sqlite import SqliteStateStore
from plantbus.state.store import DeadLetterFilter

FAST_RETRY = RetryConfig(max_attempts=3, initial_seconds=0.01, max_seconds=0.05)


def progressed(order: str, number: int, value: str = "1") -> Event:
    return Event.create(
        "production.workorder.progressed.v1",
        "/test",
        {
            "work_order_id": order,
            "quantity": {"value": value, "unit": "u"},
            "duration_seconds": str(number),
        },
        partitionkey=order,
    )


class FlakySink(Sink):
    """Fail the first `failures` attempts per event, then accept."""

    def __init__(self, failures: int, *, permanent_for: str | None = None) -> None:
        self.name = "flaky"
        self.failures = failures
        self.permanent_for = permanent_for
        self.attempts: dict[str, int] = {}
        self.delivered: list[Event] = []

    async def deliver(self, event: Event) -> str | None:
        count = self.attempts[event.id] = self.attempts.get(event.id, 0) + 1
        if event.data.get("work_order_id") == self.permanent_for:
            raise PermanentDeliveryError(f"work order {self.permanent_for} is closed")
        if count <= self.failures:
            raise RetryableDeliveryError("target busy", retry_after=0.01)
        await asyncio.sleep(0)
        self.delivered.append(event)
        return f"flaky:{event.id}"


@pytest.fixture
async def stores(tmp_path: Path):
    log = SqliteLog(tmp_path / "log.sqlite", partitions=4)
    await log.start()
    state = SqliteStateStore(tmp_path / "state.sqlite")
    await state.start()
    yield log, state
    await state.close()
    await log.close()


def make_runtime(
    log, state, sink: Sink, steps: list[Step] | None = None, **options
) -> PipelineRuntime:
    stopping = asyncio.Event()
    deliverer = Deliverer(
        "test", {sink.name: sink}, [sink.name], state, FAST_RETRY, stopping
    )
    return PipelineRuntime(
        "test",
        log,
        state,
        ["production.*"],
        steps or [],
        deliverer,
        commit_interval=0.01,
        **options,
    )


async def run_until(runtime: PipelineRuntime, condition, timeout: float = 10) -> None:
    task = asyncio.create_task(runtime.run())
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.01)
    finally:
        runtime.stopping.set()
        await task


async def test_runtime_keeps_order_per_key_across_retries(stores) -> None:
    log, state = stores
    events = [progressed(f"WO{n % 5}", n) for n in range(100)]
    await log.append(events)
    sink = FlakySink(failures=1)
    runtime = make_runtime(log, state, sink, concurrency=5)

    await run_until(runtime, lambda: len(sink.delivered) == 100)

    for key in {f"WO{n}" for n in range(5)}:
        sent = [e.id for e in events if e.partitionkey == key]
        received = [e.id for e in sink.delivered if e.partitionkey == key]
        assert received == sent


async def test_runtime_commits_and_resumes_without_redelivery(stores) -> None:
    log, state = stores
    await log.append([progressed("WO1", n) for n in range(20)])
    first = MemorySink("mem")
    await run_until(make_runtime(log, state, first), lambda: len(first.events) == 20)

    await log.append([progressed("WO1", n) for n in range(20, 25)])
    second = MemorySink("mem")
    await run_until(make_runtime(log, state, second), lambda: len(second.events) == 5)

    assert await log.lag("test") == 0
    assert [e.data["duration_seconds"] for e in second.events] == [
        str(n) for n in range(20, 25)
    ]


async def test_runtime_skips_ledgered_events_after_offset_reset(stores) -> None:
    log, state = stores
    await log.append([progressed("WO1", n) for n in range(10)])
    sink = FlakySink(failures=0)
    await run_until(make_runtime(log, state, sink), lambda: len(sink.delivered) == 10)

    await log.seek("test", offset=1)
    runtime = make_runtime(log, state, sink)
    await run_until(runtime, lambda: runtime.processed == 10)

    assert len(sink.delivered) == 10


async def test_runtime_dead_letters_exhausted_and_permanent_failures(stores) -> None:
    log, state = stores
    events = [progressed("WO-closed", 1), progressed("WO-ok", 2)]
    await log.append(events)
    sink = FlakySink(failures=0, permanent_for="WO-closed")
    runtime = make_runtime(log, state, sink)

    await run_until(runtime, lambda: runtime.processed == 2)

    letters = await state.dead_letters(DeadLetterFilter())
    assert [letter.event_id for letter in letters] == [events[0].id]
    assert letters[0].stage == "deliver:flaky"
    assert "WO-closed is closed" in letters[0].error
    assert letters[0].payload == events[0].to_json()
    assert [e.id for e in sink.delivered] == [events[1].id]


async def test_runtime_gives_up_after_max_attempts(stores) -> None:
    log, state = stores
    await log.append([progressed("WO1", 1)])
    sink = FlakySink(failures=10)
    runtime = make_runtime(log, state, sink)

    await run_until(runtime, lambda: runtime.processed == 1)

    letters = await state.dead_letters(DeadLetterFilter())
    assert len(letters) == 1
    assert len(letters[0].attempts) == FAST_RETRY.max_attempts
    assert letters[0].error.startswith("gave up after 3 attempts")


async def test_runtime_steps_validate_filter_and_map(stores) -> None:
    log, state = stores
    good = progressed("WO1", 1, value="5")
    zero = progressed("WO2", 2, value="0")
    bad = progressed("WO3", 3)
    bad.data["quantity"]["value"] = "12,5"
    await log.append([good, zero, bad])
    sink = MemorySink("mem")
    steps: list[Step] = [
        ValidateStep(Catalogue.load(), allow_unknown_types=False),
        FilterStep('data.quantity.value != "0"'),
        MapStep(
            MapOptions(
                fields={
                    "order": "data.work_order_id",
                    "qty": "data.quantity.value & ' ' & data.quantity.unit",
                },
                type="analytics.progress.v1",
            )
        ),
    ]
    runtime = make_runtime(log, state, sink, steps)

    await run_until(runtime, lambda: runtime.processed == 3)

    assert [e.data for e in sink.events] == [{"order": "WO1", "qty": "5 u"}]
    assert sink.events[0].type == "analytics.progress.v1"
    letters = await state.dead_letters(DeadLetterFilter())
    assert [letter.stage for letter in letters] == ["validate"]
    assert "data.quantity.value" in letters[0].error


async def test_runtime_bounds_work_in_flight(stores) -> None:
    log, state = stores
    await log.append([progressed(f"WO{n}", n) for n in range(200)])
    gate = asyncio.Event()
    seen: list[int] = []

    class SlowSink(Sink):
        name = "slow"

        async def deliver(self, event: Event) -> str | None:
            seen.append(1)
            await gate.wait()
            return None

    runtime = make_runtime(log, state, SlowSink(), max_in_flight=50, concurrency=10)
    task = asyncio.create_task(runtime.run())
    await asyncio.sleep(0.3)
    assert len(seen) == 10
    assert runtime.processed == 0
    gate.set()
    async with asyncio.timeout(10):
        while runtime.processed < 200:
            await asyncio.sleep(0.01)
    runtime.stopping.set()
    await task
