"""FolderSource with the real B2MML parser and list-backed ingest and reject."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from plantbus.backbone.log import Appended
from plantbus.connectors.files import FolderSource
from plantbus.errors import BackboneError, EventError, Violation
from plantbus.events.envelope import Event
from plantbus.formats.b2mml import (
    MaterialLine,
    parse_b2mml,
    write_production_performance,
)
from plantbus.state.dead_letters import DeadLetter

START = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


class FakeLog:
    """Ingest and reject callables that keep events by id, as the real log does."""

    def __init__(self) -> None:
        self.events: dict[str, Event] = {}
        self.batches: list[list[Event]] = []
        self.dead_letters: list[DeadLetter] = []
        self.fail_with: Exception | None = None

    async def ingest(self, events: Sequence[Event]) -> list[Appended]:
        if self.fail_with is not None:
            raise self.fail_with
        self.batches.append(list(events))
        appended = []
        for event in events:
            duplicate = event.id in self.events
            self.events.setdefault(event.id, event)
            appended.append(Appended(event.id, len(self.events), 0, duplicate))
        return appended

    async def reject(self, letter: DeadLetter) -> None:
        self.dead_letters.append(letter)


def _document(work_order_id: str = "WO-1") -> bytes:
    return write_production_performance(
        work_order_id=work_order_id,
        produced=MaterialLine("FG-1", Decimal("5"), "u", lot="L1"),
        consumed=[MaterialLine("RM-1", Decimal("2.5"), "kg")],
        started_at=START,
        ended_at=START + timedelta(hours=1),
    )


def _source(inbox: Path, b2mml_xsd: Path) -> FolderSource:
    parser = functools.partial(parse_b2mml, schema_dir=b2mml_xsd, plant="PLANT-1")
    return FolderSource("mes-drop", inbox, parser, poll_interval=0.01)


async def _prepare(source: FolderSource) -> None:
    for folder in (source.inbox, source.done_dir, source.rejected_dir):
        folder.mkdir(parents=True, exist_ok=True)


async def test_folder_source_ingests_then_moves_to_done(
    tmp_path: Path, b2mml_xsd: Path
) -> None:
    source = _source(tmp_path, b2mml_xsd)
    await _prepare(source)
    log = FakeLog()
    (tmp_path / "wo-1.xml").write_bytes(_document())

    first = await source.poll(log.ingest, log.reject)
    second = await source.poll(log.ingest, log.reject)

    # The first poll only records the file's size and time; the second takes it.
    assert first == 0
    assert second == 1
    assert [len(batch) for batch in log.batches] == [3]
    assert {e.source for e in log.events.values()} == {"b2mml:wo-1.xml"}
    assert not (tmp_path / "wo-1.xml").exists()
    assert (tmp_path / "done" / "wo-1.xml").read_bytes() == _document()
    assert log.dead_letters == []


async def test_folder_source_rejects_invalid_document(
    tmp_path: Path, b2mml_xsd: Path
) -> None:
    source = _source(tmp_path, b2mml_xsd)
    await _prepare(source)
    log = FakeLog()
    bad = _document().replace(b"<QuantityString>5<", b"<QuantityString>-5<")
    (tmp_path / "bad.xml").write_bytes(bad)

    await source.poll(log.ingest, log.reject)
    await source.poll(log.ingest, log.reject)

    assert log.batches == []
    [letter] = log.dead_letters
    assert letter.stage == "ingest"
    assert letter.payload == bad
    assert letter.source == "mes-drop"
    assert letter.content_type == "application/xml"
    assert letter.details["file"] == "bad.xml"
    [problem] = letter.details["problems"]
    assert problem["location"].endswith("/MaterialActual[1]/Quantity/QuantityString")
    assert "is negative" in letter.error
    assert (tmp_path / "rejected" / "bad.xml").read_bytes() == bad


async def test_folder_source_rejects_when_ingest_raises_event_error(
    tmp_path: Path, b2mml_xsd: Path
) -> None:
    source = _source(tmp_path, b2mml_xsd)
    await _prepare(source)
    log = FakeLog()
    log.fail_with = EventError("e-1", [Violation("data.item", "x", "is unknown")])
    (tmp_path / "wo.xml").write_bytes(_document())

    await source.poll(log.ingest, log.reject)
    await source.poll(log.ingest, log.reject)

    [letter] = log.dead_letters
    assert letter.details["problems"] == [
        {"location": "data.item", "value": "x", "message": "is unknown"}
    ]
    assert (tmp_path / "rejected" / "wo.xml").exists()


async def test_folder_source_keeps_file_when_log_fails(
    tmp_path: Path, b2mml_xsd: Path
) -> None:
    source = _source(tmp_path, b2mml_xsd)
    await _prepare(source)
    log = FakeLog()
    log.fail_with = BackboneError("The log is not writable.")
    (tmp_path / "wo.xml").write_bytes(_document())

    await source.poll(log.ingest, log.reject)
    await source.poll(log.ingest, log.reject)

    assert (tmp_path / "wo.xml").exists()
    assert log.dead_letters == []
    assert list((tmp_path / "done").iterdir()) == []


async def test_folder_source_reingest_after_crash_is_deduplicated(
    tmp_path: Path, b2mml_xsd: Path
) -> None:
    log = FakeLog()
    (tmp_path / "wo.xml").write_bytes(_document())
    crashed = _source(tmp_path, b2mml_xsd)
    await _prepare(crashed)

    # A crash after the append but before the move leaves the file in the inbox.
    await crashed.poll(log.ingest, log.reject)
    events = parse_b2mml(_document(), "wo.xml", b2mml_xsd, plant="PLANT-1")
    await log.ingest(events)
    restarted = _source(tmp_path, b2mml_xsd)
    await restarted.poll(log.ingest, log.reject)
    await restarted.poll(log.ingest, log.reject)

    assert len(log.batches) == 2
    assert [e.id for e in log.batches[0]] == [e.id for e in log.batches[1]]
    assert len(log.events) == 3
    assert (tmp_path / "done" / "wo.xml").exists()


async def test_folder_source_waits_for_growing_file(
    tmp_path: Path, b2mml_xsd: Path
) -> None:
    source = _source(tmp_path, b2mml_xsd)
    await _prepare(source)
    log = FakeLog()
    document = _document()
    path = tmp_path / "wo.xml"
    path.write_bytes(document[:100])

    await source.poll(log.ingest, log.reject)
    path.write_bytes(document)
    grown = await source.poll(log.ingest, log.reject)
    settled = await source.poll(log.ingest, log.reject)

    assert grown == 0
    assert settled == 1
    assert log.dead_letters == []


async def test_folder_source_ignores_temporary_and_hidden_files(
    tmp_path: Path, b2mml_xsd: Path
) -> None:
    source = _source(tmp_path, b2mml_xsd)
    await _prepare(source)
    log = FakeLog()
    for name in ("wo.xml.tmp", ".wo.xml", "wo.xml.part"):
        (tmp_path / name).write_bytes(_document())

    await source.poll(log.ingest, log.reject)
    processed = await source.poll(log.ingest, log.reject)

    assert processed == 0
    assert log.batches == []
    assert sorted(os.listdir(tmp_path)) == sorted(
        [".wo.xml", "done", "rejected", "wo.xml.part", "wo.xml.tmp"]
    )


async def test_folder_source_keeps_older_file_of_same_name(
    tmp_path: Path, b2mml_xsd: Path
) -> None:
    source = _source(tmp_path, b2mml_xsd)
    await _prepare(source)
    log = FakeLog()
    for _ in range(2):
        (tmp_path / "wo.xml").write_bytes(_document())
        await source.poll(log.ingest, log.reject)
        await source.poll(log.ingest, log.reject)

    assert sorted(os.listdir(tmp_path / "done")) == ["wo.1.xml", "wo.xml"]
    assert len(log.events) == 3


async def test_folder_source_run_stops_on_event(
    tmp_path: Path, b2mml_xsd: Path
) -> None:
    source = _source(tmp_path / "inbox", b2mml_xsd)
    log = FakeLog()
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(log.ingest, log.reject, stop))
    await asyncio.sleep(0.05)
    (tmp_path / "inbox" / "wo.xml").write_bytes(_document())

    for _ in range(500):
        if (tmp_path / "inbox" / "done" / "wo.xml").exists():
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, timeout=2)

    assert (tmp_path / "inbox" / "done" / "wo.xml").exists()
    assert len(log.events) == 3


def test_folder_source_rejects_zero_poll_interval(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        FolderSource("x", tmp_path, lambda data, name: [], poll_interval=0)


async def test_folder_source_file_moved_away_by_other_worker(
    tmp_path: Path, b2mml_xsd: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # While a source lease moves, two workers may take the same file: the
    # other one moves it to done/ while this one parses it.
    parse = functools.partial(parse_b2mml, schema_dir=b2mml_xsd, plant="PLANT-1")

    def parse_while_moved(data: bytes, name: str) -> list[Event]:
        (tmp_path / name).replace(tmp_path / "done" / name)
        return parse(data, name)

    source = FolderSource("mes-drop", tmp_path, parse_while_moved, poll_interval=0.01)
    await _prepare(source)
    log = FakeLog()
    (tmp_path / "wo-1.xml").write_bytes(_document())

    await source.poll(log.ingest, log.reject)
    ingested = await source.poll(log.ingest, log.reject)

    assert ingested == 1
    assert [len(batch) for batch in log.batches] == [3]
    assert "moved away by another process" in caplog.text
    assert (tmp_path / "done" / "wo-1.xml").exists()
    assert log.dead_letters == []
