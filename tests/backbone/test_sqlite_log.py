"""SqliteLog: the shared EventLog contract plus SQLite-specific behaviour."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from plantbus.backbone.log import EventLog
from plantbus.backbone.sqlite import SqliteLog
from plantbus.errors import BackboneError
from plantbus.events.envelope import Event

from .contract import *  # noqa: F403
from .contract import OpenLog, make_event, read_all

PARTITIONS = 8


@pytest.fixture
async def open_log(tmp_path: Path) -> AsyncIterator[OpenLog]:
    """Open started SqliteLog handles on one file in tmp_path; close them afterwards."""
    handles: list[SqliteLog] = []

    async def opener() -> EventLog:
        log = SqliteLog(tmp_path / "events.db", partitions=PARTITIONS)
        await log.start()
        handles.append(log)
        return log

    yield opener
    for handle in handles:
        await handle.close()


@pytest.fixture
async def log(open_log: OpenLog) -> EventLog:
    """Return a started, empty SqliteLog."""
    return await open_log()


async def test_sqlite_log_missing_folder_names_path(tmp_path: Path) -> None:
    path = tmp_path / "no-such-folder" / "events.db"
    log = SqliteLog(path)

    with pytest.raises(BackboneError) as raised:
        await log.start()

    assert str(path) in str(raised.value)
    assert "exists" in str(raised.value)


async def test_sqlite_log_foreign_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are not the pages of an SQLite database" * 100)

    with pytest.raises(BackboneError, match="not an SQLite database"):
        await SqliteLog(path).start()


async def test_sqlite_log_other_schema_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE orders (id INTEGER)")
    connection.close()

    with pytest.raises(BackboneError, match="not a plantbus event log"):
        await SqliteLog(path).start()


async def test_sqlite_log_partition_count_is_fixed(tmp_path: Path) -> None:
    first = SqliteLog(tmp_path / "events.db", partitions=4)
    await first.start()
    await first.close()

    with pytest.raises(BackboneError, match="created with 4 partitions"):
        await SqliteLog(tmp_path / "events.db", partitions=8).start()


async def test_sqlite_log_disk_full_says_so(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path / "events.db")
    await log.start()
    # A page limit makes SQLite report SQLITE_FULL exactly as a full disk does.
    assert log._write_connection is not None
    log._write_connection.execute("PRAGMA max_page_count = 40")
    big = [make_event(f"WO-{i}", i) for i in range(2000)]

    with pytest.raises(BackboneError, match="disk or the database is full") as raised:
        await log.append(big)

    assert str(tmp_path / "events.db") in str(raised.value)
    assert await log.end_offset() == 0
    await log.close()


async def test_sqlite_log_lock_timeout_names_cause(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path / "events.db", busy_timeout=0.2)
    await log.start()
    other = sqlite3.connect(tmp_path / "events.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")

    try:
        with pytest.raises(BackboneError, match="held the database lock") as raised:
            await log.append([make_event("WO-1")])
    finally:
        other.execute("ROLLBACK")
        other.close()

    assert "busy_timeout" in str(raised.value)
    [appended] = await log.append([make_event("WO-2")])
    assert appended.duplicate is False
    await log.close()


async def test_sqlite_log_read_does_not_wait_for_writer(log: EventLog) -> None:
    assert isinstance(log, SqliteLog)
    await log.append([make_event("WO-1")])
    other = sqlite3.connect(log.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE log_meta SET total_bytes = total_bytes")

    try:
        started = time.monotonic()
        records = await read_all(log)
        elapsed = time.monotonic() - started
    finally:
        other.execute("ROLLBACK")
        other.close()

    assert len(records) == 1
    assert elapsed < 1.0


async def test_sqlite_log_trim_by_size_counts_body_bytes(log: EventLog) -> None:
    events = [make_event(f"WO-{i:02}", 10 + i) for i in range(10)]
    size = len(events[0].to_json())
    assert all(len(e.to_json()) == size for e in events)
    appended = await log.append(events)

    deleted = await log.trim(max_bytes=size * 3)

    assert deleted == 7
    assert [r.offset for r in await read_all(log)] == [a.offset for a in appended[7:]]


async def test_sqlite_log_trim_in_chunks_deletes_all(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path / "events.db", trim_chunk=7)
    await log.start()
    await log.append([make_event(f"WO-{i}", i) for i in range(30)])

    deleted = await log.trim(max_bytes=0)

    assert deleted == 30
    assert await read_all(log) == []
    await log.close()


async def test_sqlite_log_group_commit_shares_transactions(log: EventLog) -> None:
    assert isinstance(log, SqliteLog)
    assert log._write_connection is not None
    changes_before = log._write_connection.total_changes

    await asyncio.gather(*(log.append([make_event(f"WO-{i}")]) for i in range(300)))

    # One meta update per transaction: far fewer than 300 means shared commits.
    inserted = 300
    meta_updates = log._write_connection.total_changes - changes_before - inserted
    assert 1 <= meta_updates < 30


async def test_sqlite_log_read_skips_idle_partition(
    log: EventLog,
) -> None:
    appended = await log.append([make_event("WO-A", i) for i in range(50)])
    busy = appended[0].partition
    idle = next(p for p in range(log.partitions) if p != busy)
    [late] = await log.append([make_event("WO-A", 50)])

    records = await log.read({idle: 0, busy: appended[-1].offset}, 10)

    assert [r.offset for r in records] == [late.offset]


async def test_sqlite_log_unserialisable_data_is_rejected(log: EventLog) -> None:
    event = Event.create(
        "production.workorder.progressed.v1", "urn:t", {"quantity": Decimal("1.5")}
    )

    with pytest.raises(BackboneError, match="not JSON-serialisable"):
        await log.append([event])


async def test_sqlite_log_use_before_start_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="call start"):
        await SqliteLog(tmp_path / "events.db").append([make_event("WO-1")])


async def test_sqlite_log_use_after_close_is_rejected(log: EventLog) -> None:
    await log.close()

    with pytest.raises(BackboneError, match="is closed"):
        await log.read({0: 0}, 10)


async def test_sqlite_log_unknown_partition_is_rejected(log: EventLog) -> None:
    with pytest.raises(ValueError, match="partition 99"):
        await log.read({99: 0}, 10)
    with pytest.raises(ValueError, match="partition 99"):
        await log.commit("erp", {99: 1})


async def test_sqlite_log_integrity_after_mixed_work(log: EventLog) -> None:
    assert isinstance(log, SqliteLog)
    await log.append([make_event(f"WO-{i}", i) for i in range(100)])
    await log.commit("erp", {0: 50})
    await log.trim(max_bytes=1000)
    await log.close()

    with sqlite3.connect(log.path) as connection:
        result = connection.execute("PRAGMA integrity_check").fetchone()[0]
    connection.close()

    assert result == "ok"


async def test_page_cache_size_is_set_on_both_connections(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path / "log.sqlite", partitions=2, cache_mib=8)
    await log.start()
    try:
        for connection in (log._write_connection, log._read_connection):
            assert connection is not None
            # Negative: KiB rather than pages.
            assert connection.execute("PRAGMA cache_size").fetchone() == (-8192,)
    finally:
        await log.close()
