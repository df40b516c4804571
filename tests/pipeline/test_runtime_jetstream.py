"""The pipeline runtime on the JetStream log: retries wait in the broker.

A retryable failure hands the record back to the group's durable consumer
with a negative acknowledgement and a delay, and the retry runs when the
consumer sends it again. The tests use the machine's NATS server and delete
their stream afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from plantbus.backbone.jetstream import JetStreamLog
from plantbus.backbone.log import Record
from plantbus.pipeline import runtime as runtime_module
from plantbus.state.sqlite import SqliteStateStore
from tests.backbone.nats_servers import machine_nats

from .test_runtime import FlakySink, make_runtime, progressed, run_until


@pytest.fixture
async def stores(
    tmp_path: Path,
) -> AsyncIterator[tuple[JetStreamLog, SqliteStateStore]]:
    url = machine_nats()
    stream = f"pbrt-{uuid.uuid4().hex[:12]}"
    log = JetStreamLog(url, stream, partitions=4)
    await log.start()
    state = SqliteStateStore(tmp_path / "state.sqlite")
    await state.start()
    yield log, state
    await state.close()
    await log.close()
    nc = await nats.connect(url)
    await nc.jsm().delete_stream(stream)
    await nc.close()


async def test_runtime_jetstream_retry_returns_from_consumer(
    stores: tuple[JetStreamLog, SqliteStateStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    log, state = stores
    # A record that never came back would now hold its key for a minute,
    # far past the test's timeout.
    monkeypatch.setattr(runtime_module, "_RETURN_GRACE_SECONDS", 60.0)
    naks: list[Record] = []
    nak = log.nak

    async def counting_nak(group: str, record: Record, delay: float) -> bool:
        naks.append(record)
        return await nak(group, record, delay)

    monkeypatch.setattr(log, "nak", counting_nak)
    events = [progressed(f"WO{n % 4}", n) for n in range(40)]
    await log.append(events)
    sink = FlakySink(failures=2)
    runtime = make_runtime(log, state, sink, concurrency=4)

    await run_until(runtime, lambda: len(sink.delivered) == 40, timeout=30)

    assert len(naks) == 80
    assert len({e.id for e in sink.delivered}) == 40
    for key in {f"WO{n}" for n in range(4)}:
        sent = [e.id for e in events if e.partitionkey == key]
        received = [e.id for e in sink.delivered if e.partitionkey == key]
        assert received == sent
    assert await log.lag("test") == 0
