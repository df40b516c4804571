"""Two pipeline runtimes that split one consumer group through partition leases.

Both use one SQLite log in this process and PostgreSQL for the state and the
leases, as worker processes on a shared backbone would.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psycopg
import pytest

from plantbus.backbone.sqlite import SqliteLog
from plantbus.config.model import RetryConfig
from plantbus.connectors.base import Sink
from plantbus.errors import PlantbusError
from plantbus.events.envelope import Event
from plantbus.pipeline.delivery import Deliverer
from plantbus.pipeline.runtime import PipelineRuntime
from plantbus.state.leases import PartitionLeases
from plantbus.state.postgres import PostgresStateStore
from plantbus.state.store import ReplayRequest

from ..state.conftest import postgres_dsn  # noqa: F401

PARTITIONS = 16
FAST_RETRY = RetryConfig(max_attempts=3, initial_seconds=0.01, max_seconds=0.05)


class SharedSink(Sink):
    """Record every delivery, repeats included, in a list shared by workers."""

    def __init__(self, worker: str, deliveries: list[tuple[str, Event]]) -> None:
        self.name = "erp"
        self.worker = worker
        self.deliveries = deliveries

    async def deliver(self, event: Event) -> str | None:
        await asyncio.sleep(0.002)
        self.deliveries.append((self.worker, event))
        return f"erp:{event.id}"


def progressed(order: str, number: int) -> Event:
    return Event.create(
        "production.workorder.progressed.v1",
        "/test",
        {
            "work_order_id": order,
            "quantity": {"value": "1", "unit": "u"},
            "duration_seconds": str(number),
        },
        partitionkey=order,
    )


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[SqliteLog]:
    log = SqliteLog(tmp_path / "log.sqlite", partitions=PARTITIONS)
    await log.start()
    yield log
    await log.close()


async def _worker(
    name: str,
    dsn: str,
    schema: str,
    hub: str,
    log: SqliteLog,
    deliveries: list[tuple[str, Event]],
) -> tuple[PipelineRuntime, PartitionLeases, PostgresStateStore]:
    state = PostgresStateStore(dsn, schema=schema, max_connections=2)
    await state.start()
    leases = PartitionLeases(dsn, hub, PARTITIONS, interval=0.1, worker=name)
    group = leases.group("erp-postings")
    await leases.start()
    stopping = asyncio.Event()
    sink = SharedSink(name, deliveries)
    deliverer = Deliverer(
        "erp-postings", {"erp": sink}, ["erp"], state, FAST_RETRY, stopping
    )
    runtime = PipelineRuntime(
        "erp-postings",
        log,
        state,
        ["production.*"],
        [],
        deliverer,
        commit_interval=0.05,
        concurrency=4,
        # Little read-ahead, so a partition to hand back drains quickly.
        max_in_flight=40,
        leases=group,
    )
    return runtime, leases, state


async def _wait(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def test_runtime_leases_hand_over_partitions_in_order(
    postgres_dsn: str,  # noqa: F811
    log: SqliteLog,
) -> None:
    schema = f"test_{uuid.uuid4().hex[:12]}"
    hub = f"runtime-leases-{uuid.uuid4().hex[:12]}"
    events = [progressed(f"WO-{n % 30}", n) for n in range(600)]
    await log.append(events[:300])
    deliveries: list[tuple[str, Event]] = []
    first, first_leases, first_state = await _worker(
        "first", postgres_dsn, schema, hub, log, deliveries
    )
    first_task = asyncio.create_task(first.run())
    second_task: asyncio.Task[None] | None = None
    second = None
    try:
        await _wait(lambda: len(deliveries) >= 60)
        second, second_leases, second_state = await _worker(
            "second", postgres_dsn, schema, hub, log, deliveries
        )
        second_task = asyncio.create_task(second.run())
        await _wait(lambda: len(second_leases.group("erp-postings").owned) == 8)
        # The rest arrives once both hold their share, so both deliver some.
        await log.append(events[300:])
        await _wait(lambda: len({e.id for _, e in deliveries}) == len(events))
    finally:
        first.stopping.set()
        if second is not None:
            second.stopping.set()
        await asyncio.gather(
            first_task, *([second_task] if second_task else []), return_exceptions=False
        )
        await first_leases.close()
        await first_state.close()
        if second is not None:
            await second_leases.close()
            await second_state.close()

    ids = [event.id for _, event in deliveries]
    workers = {worker for worker, _ in deliveries}
    assert len(ids) == len(set(ids)), "an event was delivered twice"
    assert workers == {"first", "second"}
    for key in {event.partitionkey for event in events}:
        sent = [e.id for e in events if e.partitionkey == key]
        received = [e.id for _, e in deliveries if e.partitionkey == key]
        assert received == sent, f"key {key} out of order"


async def test_runtime_leases_replay_moves_every_partition(
    postgres_dsn: str,  # noqa: F811
    log: SqliteLog,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="plantbus.pipeline")
    schema = f"test_{uuid.uuid4().hex[:12]}"
    hub = f"runtime-leases-{uuid.uuid4().hex[:12]}"
    events = [progressed(f"WO-{n % 30}", n) for n in range(400)]
    await log.append(events)
    deliveries: list[tuple[str, Event]] = []
    workers = [
        await _worker(name, postgres_dsn, schema, hub, log, deliveries)
        for name in ("first", "second")
    ]
    tasks = [asyncio.create_task(runtime.run()) for runtime, _, _ in workers]
    try:
        await _wait(lambda: len(deliveries) == len(events))
        # Both hold their share, so each has read positions of its own.
        for _, leases, _ in workers:
            assert len(leases.group("erp-postings").owned) == PARTITIONS // 2
        request_id = await workers[1][2].request_replay(
            ReplayRequest("erp-postings", from_offset=1, force=True)
        )
        await _wait(lambda: len(deliveries) == 2 * len(events))
        # Wait until both are back to their share, then for any late repeat.
        await _wait(
            lambda: all(
                len(leases.group("erp-postings").owned) == PARTITIONS // 2
                for _, leases, _ in workers
            )
        )
        await asyncio.sleep(0.5)
    finally:
        for runtime, _, _ in workers:
            runtime.stopping.set()
        await asyncio.gather(*tasks)
        for _, leases, state in workers:
            await leases.close()
            await state.close()

    assert request_id > 0
    replayed = deliveries[len(events) :]
    assert len(deliveries) == 2 * len(events)
    assert sorted(e.id for _, e in replayed) == sorted(e.id for e in events)
    # One worker applied the replay, after collecting every partition.
    assert caplog.text.count("replays from offset 1") == 1
    assert caplog.text.count("collects every partition") == 1
    for key in {event.partitionkey for event in events}:
        sent = [e.id for e in events if e.partitionkey == key]
        received = [e.id for _, e in replayed if e.partitionkey == key]
        assert received == sent, f"key {key} out of order in the replay"


async def test_runtime_leases_lost_session_stops_pipeline(
    postgres_dsn: str,  # noqa: F811
    log: SqliteLog,
) -> None:
    schema = f"test_{uuid.uuid4().hex[:12]}"
    hub = f"runtime-leases-{uuid.uuid4().hex[:12]}"
    deliveries: list[tuple[str, Event]] = []
    runtime, leases, state = await _worker(
        "only", postgres_dsn, schema, hub, log, deliveries
    )
    # Record whether each commit came after the lease session was lost.
    commits_after_loss: list[bool] = []
    commit = log.commit

    async def watched_commit(group: str, offsets: dict[int, int]) -> None:
        commits_after_loss.append(leases.failure is not None)
        await commit(group, offsets)

    log.commit = watched_commit  # type: ignore[method-assign]
    await log.append([progressed(f"WO-{n % 5}", n) for n in range(40)])
    task = asyncio.create_task(runtime.run())
    try:
        await asyncio.sleep(0.5)
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (f"plantbus-worker {hub} only",),
            )
        with pytest.raises(PlantbusError, match="lost its PostgreSQL session"):
            async with asyncio.timeout(10):
                await task
        # Another worker may hold the partitions now: no commit after the loss.
        assert commits_after_loss
        assert not any(commits_after_loss)
    finally:
        runtime.stopping.set()
        await asyncio.gather(task, return_exceptions=True)
        await leases.close()
        await state.close()
