"""HTTP ingest responds 503 with Retry-After while the backlog is over its limit."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from plantbus.api.app import create_app
from plantbus.api.backpressure import BacklogGuard
from plantbus.events.catalogue import Catalogue
from plantbus.ingest import Ingestor

from .support import open_event_log

EVENT = {
    "specversion": "1.0",
    "id": "bp-1",
    "source": "/test",
    "type": "production.workorder.started.v1",
    "data": {"work_order_id": "WO-B", "started_at": "2026-12-01T06:00:00Z"},
}


async def post(client: httpx.AsyncClient, event_id: str) -> httpx.Response:
    return await client.post(
        "/v1/events",
        content=json.dumps({**EVENT, "id": event_id}),
        headers={"Content-Type": "application/cloudevents+json"},
    )


async def test_ingest_answers_503_when_backlog_over_limit(tmp_path: Path) -> None:
    backlog = {"events": 0}

    async def measure() -> int:
        return backlog["events"]

    guard = BacklogGuard(measure, 100, retry_after_seconds=7, cache_seconds=0)
    catalogue = Catalogue.load()
    async with open_event_log(tmp_path) as log:
        app = create_app(
            Ingestor(log, catalogue), catalogue=catalogue, backlog_guard=guard
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://plantbus.test"
        ) as client:
            accepted = await post(client, "bp-1")
            backlog["events"] = 101
            rejected = await post(client, "bp-2")
            backlog["events"] = 100
            accepted_again = await post(client, "bp-3")

        stored = await log.end_offset()

    assert accepted.status_code == 202
    assert rejected.status_code == 503
    assert rejected.headers["retry-after"] == "7"
    assert rejected.headers["content-type"] == "application/problem+json"
    assert "101 events" in rejected.json()["detail"]
    assert accepted_again.status_code == 202
    assert stored == 2


async def test_hub_refuses_events_while_sink_is_down(tmp_path: Path) -> None:
    from plantbus.config import load_hub
    from plantbus.hub import build_hub
    from plantbus.sim.trytond_server import free_port

    port = free_port()
    # The sink's path is a folder, so every delivery fails and the backlog grows.
    (tmp_path / "feed.jsonl").mkdir()
    hub_file = tmp_path / "hub.yaml"
    hub_file.write_text(f"""\
hub: {{data_dir: data}}
api: {{port: {port}, max_backlog_events: 10, backlog_retry_after_seconds: 3}}
sources:
  - {{name: shopfloor, kind: http}}
sinks:
  - name: feed
    kind: file
    path: feed.jsonl
    retry: {{max_attempts: 1000, initial_seconds: 0.05, max_seconds: 0.05}}
pipelines:
  - name: feed
    steps:
      - deliver: {{to: [feed]}}
""")
    hub = await build_hub(load_hub(hub_file, environ={}))
    running = asyncio.create_task(hub.run())
    await hub.started.wait()
    statuses = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for attempt in range(100):
                try:
                    response = await post(client, f"bp-hub-{attempt}")
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
                    continue
                statuses.append(response.status_code)
                if response.status_code == 503:
                    retry_after = response.headers["retry-after"]
                    break
                await asyncio.sleep(0.05)
    finally:
        hub.stop()
        await running

    assert statuses[0] == 202
    assert statuses[-1] == 503
    assert retry_after == "3"
    assert statuses.count(202) > 10
