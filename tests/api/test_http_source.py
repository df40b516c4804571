"""HttpSource: the API served by a real uvicorn on 127.0.0.1 inside the event loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import httpx
import orjson
import pytest

from plantbus.connectors.http import HttpSource
from plantbus.errors import ConfigError
from plantbus.events.catalogue import Catalogue
from plantbus.state.dead_letters import DeadLetter

from .support import ReadableLog, build_ingest, read_all, structured


async def _no_reject(dead_letter: DeadLetter) -> None:
    raise AssertionError(f"The HTTP source rejected {dead_letter!r}.")


def _document(event_id: str) -> dict[str, object]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "test",
        "type": "io.example.x",
        "data": {"n": 1},
    }


@dataclass
class RunningSource:
    source: HttpSource
    stop: asyncio.Event
    task: asyncio.Task[None]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.source.bound_port}"


@pytest.fixture
async def running_source(
    catalogue: Catalogue, event_log: ReadableLog
) -> AsyncIterator[RunningSource]:
    source = HttpSource(catalogue, host="127.0.0.1", port=0, allow_unknown_types=True)
    stop = asyncio.Event()
    ingest = build_ingest(event_log, catalogue, allow_unknown_types=True)
    task = asyncio.create_task(source.run(ingest, _no_reject, stop))
    await asyncio.wait_for(source.wait_started(), 5)
    yield RunningSource(source, stop, task)
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_http_source_binds_free_port(running_source: RunningSource) -> None:
    assert running_source.source.bound_port > 0


async def test_http_source_accepts_event_over_tcp(
    running_source: RunningSource, event_log: ReadableLog
) -> None:
    async with httpx.AsyncClient(base_url=running_source.base_url) as client:
        health = await client.get("/v1/health")
        posted = await client.post("/v1/events", **structured(_document("evt-tcp")))

    assert health.status_code == 200
    assert posted.status_code == 202, posted.text
    [record] = await read_all(event_log)
    assert record.event.id == "evt-tcp"


async def test_http_source_handles_concurrent_clients(
    running_source: RunningSource, event_log: ReadableLog
) -> None:
    headers = {"content-type": "application/cloudevents-batch+json"}

    async with aiohttp.ClientSession(running_source.base_url) as session:

        async def post(batch: int) -> int:
            body = orjson.dumps([_document(f"evt-{batch}-{n}") for n in range(10)])
            async with session.post("/v1/events", data=body, headers=headers) as reply:
                return reply.status

        statuses = await asyncio.gather(*(post(batch) for batch in range(20)))

    assert statuses == [202] * 20
    assert len(await read_all(event_log)) == 200


async def test_http_source_closes_port_on_stop(
    running_source: RunningSource,
) -> None:
    port = running_source.source.bound_port

    running_source.stop.set()
    await asyncio.wait_for(running_source.task, 10)

    assert running_source.task.exception() is None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


async def test_http_source_port_in_use_raises_config_error(
    catalogue: Catalogue, event_log: ReadableLog
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        source = HttpSource(catalogue, host="127.0.0.1", port=port)
        ingest = build_ingest(event_log, catalogue, allow_unknown_types=False)

        with pytest.raises(ConfigError, match=f"port {port}"):
            await source.run(ingest, _no_reject, asyncio.Event())


def test_http_source_rejects_port_out_of_range(catalogue: Catalogue) -> None:
    with pytest.raises(ConfigError, match="`port` is 70000"):
        HttpSource(catalogue, port=70000)
