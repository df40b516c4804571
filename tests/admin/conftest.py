"""Fixtures for the operator tools: a hub file, its real SQLite stores, a sink."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from plantbus.backbone.sqlite import SqliteLog
from plantbus.config import HubConfig, load_hub
from plantbus.config.model import RetryConfig
from plantbus.connectors.base import Sink
from plantbus.errors import PermanentDeliveryError
from plantbus.events.envelope import Event
from plantbus.pipeline.delivery import Deliverer
from plantbus.pipeline.runtime import PipelineRuntime
from plantbus.state.sqlite import SqliteStateStore

HUB_YAML = """\
hub:
  name: admin-test
  data_dir: data
sources:
  - name: mes-exports
    kind: folder
    path: inbox
    schema_dir: xsd
  - name: shopfloor
    kind: http
sinks:
  - name: erp
    kind: memory
pipelines:
  - name: erp-postings
    types: ["production.*"]
    steps:
      - deliver:
          to: [erp]
"""

PIPELINE = "erp-postings"
FAST_RETRY = RetryConfig(max_attempts=2, initial_seconds=0.01, max_seconds=0.02)


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


class ClosedOnceSink(Sink):
    """Reject each event permanently `failures` times, then accept it."""

    def __init__(self, failures: int = 1) -> None:
        self.name = "erp"
        self.failures = failures
        self.attempts: dict[str, int] = {}
        self.delivered: list[Event] = []

    async def deliver(self, event: Event) -> str | None:
        count = self.attempts[event.id] = self.attempts.get(event.id, 0) + 1
        if count <= self.failures:
            raise PermanentDeliveryError(
                f"work order {event.data['work_order_id']} is closed"
            )
        self.delivered.append(event)
        return f"erp:{event.id}"


@pytest.fixture
def hub_file(tmp_path: Path) -> Path:
    (tmp_path / "xsd").mkdir()
    path = tmp_path / "hub.yaml"
    path.write_text(HUB_YAML)
    return path


@pytest.fixture
def config(hub_file: Path) -> HubConfig:
    return load_hub(hub_file)


@pytest.fixture
async def stores(
    config: HubConfig,
) -> AsyncIterator[tuple[SqliteLog, SqliteStateStore]]:
    data_dir = config.hub.data_dir
    data_dir.mkdir()
    log = SqliteLog(data_dir / "log.sqlite", partitions=config.backbone.partitions)
    await log.start()
    state = SqliteStateStore(data_dir / "state.sqlite")
    await state.start()
    yield log, state
    await state.close()
    await log.close()


def make_runtime(
    log: SqliteLog, state: SqliteStateStore, sink: Sink, *, park_keys: bool = True
) -> PipelineRuntime:
    deliverer = Deliverer(
        PIPELINE, {sink.name: sink}, [sink.name], state, FAST_RETRY, asyncio.Event()
    )
    return PipelineRuntime(
        PIPELINE,
        log,
        state,
        ["production.*"],
        [],
        deliverer,
        commit_interval=0.01,
        park_keys=park_keys,
    )


async def run_until(runtime: PipelineRuntime, condition, timeout: float = 10) -> None:
    """Run a pipeline until an async condition holds, then stop it."""
    task = asyncio.create_task(runtime.run())
    try:
        async with asyncio.timeout(timeout):
            while not await condition():
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
    finally:
        runtime.stopping.set()
        await task
