"""Sources that can wait pause while the pipelines' backlog is over its limit."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from plantbus.backbone.log import Appended
from plantbus.config import load_hub
from plantbus.events.envelope import Event
from plantbus.formats.b2mml import MaterialLine, write_production_performance
from plantbus.hub import build_hub
from plantbus.ingest import BacklogGate

START = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


async def test_gate_waits_until_backlog_is_under_limit() -> None:
    backlog = {"events": 50}
    appended: list[int] = []

    async def measure() -> int:
        return backlog["events"]

    async def ingest(events: Sequence[Event]) -> list[Appended]:
        appended.append(len(events))
        return []

    gate = BacklogGate(measure, 10, asyncio.Event(), poll_seconds=0.01)
    waiting = asyncio.create_task(gate.wrap(ingest, "drop")([]))
    await asyncio.sleep(0.1)
    assert appended == []
    assert not waiting.done()

    backlog["events"] = 10
    await asyncio.wait_for(waiting, 2)
    assert appended == [0]
    assert gate.pauses == 1


async def test_gate_lets_source_finish_when_hub_stops() -> None:
    async def measure() -> int:
        return 1_000

    async def ingest(events: Sequence[Event]) -> list[Appended]:
        return []

    stop = asyncio.Event()
    gate = BacklogGate(measure, 10, stop, poll_seconds=10)
    waiting = asyncio.create_task(gate.wrap(ingest, "drop")([]))
    await asyncio.sleep(0.05)
    stop.set()
    # The file in hand is appended rather than lost; the source then stops.
    assert await asyncio.wait_for(waiting, 2) == []


def _document(order: str) -> bytes:
    return write_production_performance(
        work_order_id=order,
        produced=MaterialLine("FG-1", Decimal("5"), "u", lot="L1"),
        consumed=[MaterialLine("RM-1", Decimal("2.5"), "kg")],
        started_at=START,
        ended_at=START,
    )


async def test_folder_source_pauses_while_sink_is_down(
    tmp_path: Path, b2mml_xsd: Path
) -> None:
    # The sink's path is a folder, so every delivery fails and the backlog grows.
    feed = tmp_path / "feed.jsonl"
    feed.mkdir()
    inbox = tmp_path / "inbox"
    hub_file = tmp_path / "hub.yaml"
    hub_file.write_text(f"""\
hub: {{data_dir: data}}
backbone: {{max_backlog_events: 2}}
api: {{enabled: false}}
sources:
  - name: mes-exports
    kind: folder
    path: inbox
    schema_dir: {b2mml_xsd}
    poll_seconds: 0.02
sinks:
  - name: feed
    kind: file
    path: feed.jsonl
    retry: {{max_attempts: 100000, initial_seconds: 0.02, max_seconds: 0.02}}
    circuit: {{reset_seconds: 0.1}}
pipelines:
  - name: feed
    steps:
      - deliver: {{to: [feed]}}
""")
    hub = await build_hub(load_hub(hub_file, environ={}))
    running = asyncio.create_task(hub.run())
    await hub.started.wait()
    try:
        inbox.mkdir(exist_ok=True)
        for number in range(6):
            (inbox / f"wo-{number}.xml").write_bytes(_document(f"WO-{number}"))
        # Each document contains more events than the limit, so after the first
        # file the source waits and the other files stay in the inbox.
        for _ in range(100):
            if (inbox / "done").exists() and any((inbox / "done").iterdir()):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        waiting = sorted(p.name for p in inbox.glob("*.xml"))
        backlog_while_down = await hub.backlog()

        # The target comes back: the backlog drains and the rest is read.
        feed.rmdir()
        for _ in range(200):
            if not list(inbox.glob("*.xml")) and await hub.backlog() == 0:
                break
            await asyncio.sleep(0.05)
        left = sorted(p.name for p in inbox.glob("*.xml"))
    finally:
        hub.stop()
        await running

    assert len(waiting) >= 4
    assert backlog_while_down <= 2 * 4
    assert left == []
    lines = feed.read_text().splitlines()
    assert len({line for line in lines}) == len(lines) >= 6
