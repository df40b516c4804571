"""Contract tests that every EventLog backend must pass.

A backend's test module imports these functions and defines two fixtures:

- `log`: a started, empty EventLog, closed after the test;
- `open_log`: an async factory that opens and starts another handle on the same
  storage as `log`, for tests that reopen the log or append from a second client.

Only the EventLog interface is used here, so the same functions run against the
SQLite backend today and against JetStream later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest

from plantbus.backbone.log import EventLog, Record, partition_for
from plantbus.events.envelope import Event

OpenLog = Callable[[], Awaitable[EventLog]]


def make_event(key: str, number: int = 0) -> Event:
    """Build a small work order event ordered by `key`."""
    return Event.create(
        "production.workorder.progressed.v1",
        "urn:plantbus:test:backbone",
        {"workOrder": key, "quantity": str(number), "uom": "EA"},
        partitionkey=key,
    )


async def read_all(
    log: EventLog, positions: dict[int, int] | None = None
) -> list[Record]:
    """Read every record after `positions` (default: the whole log) in pages."""
    current = dict(positions or dict.fromkeys(range(log.partitions), 0))
    records: list[Record] = []
    while True:
        page = await log.read(current, 1000)
        if not page:
            return records
        records.extend(page)
        for record in page:
            current[record.partition] = record.offset


async def test_append_single_event_is_readable(log: EventLog) -> None:
    event = make_event("WO-1")

    [appended] = await log.append([event])
    records = await read_all(log)

    assert appended.event_id == event.id
    assert appended.duplicate is False
    assert appended.offset > 0
    assert appended.partition == partition_for("WO-1", log.partitions)
    assert await log.end_offset() == appended.offset
    assert [r.offset for r in records] == [appended.offset]
    assert records[0].partition == appended.partition
    assert records[0].event.id == event.id
    assert records[0].event.data == event.data
    assert records[0].body == event.to_json()
    assert records[0].appended_at == pytest.approx(time.time(), abs=60)


async def test_append_empty_batch_returns_nothing(log: EventLog) -> None:
    assert await log.append([]) == []
    assert await log.end_offset() == 0


async def test_append_batch_offsets_increase_in_order(log: EventLog) -> None:
    events = [make_event(f"WO-{i % 3}", i) for i in range(10)]

    appended = await log.append(events)

    assert [a.event_id for a in appended] == [e.id for e in events]
    offsets = [a.offset for a in appended]
    assert offsets == sorted(offsets)
    assert len(set(offsets)) == len(offsets)
    assert not any(a.duplicate for a in appended)
    assert await log.end_offset() == offsets[-1]


async def test_append_duplicate_in_later_batch_returns_original(log: EventLog) -> None:
    event = make_event("WO-1")
    [first] = await log.append([event])

    second, fresh = await log.append([event, make_event("WO-2")])

    assert second.duplicate is True
    assert second.offset == first.offset
    assert second.partition == first.partition
    assert fresh.duplicate is False
    assert fresh.offset > first.offset
    assert len(await read_all(log)) == 2


async def test_append_duplicate_within_batch_returns_first_copy(log: EventLog) -> None:
    event = make_event("WO-1")
    other = make_event("WO-2")

    appended = await log.append([event, other, event])

    assert appended[0].duplicate is False
    assert appended[2].duplicate is True
    assert appended[2].offset == appended[0].offset
    assert appended[2].partition == appended[0].partition
    assert [r.event.id for r in await read_all(log)] == [event.id, other.id]


async def test_partition_same_key_same_partition(log: EventLog) -> None:
    keyed = [make_event("WO-7", i) for i in range(5)]
    by_subject = Event.create(
        "production.workorder.progressed.v1", "urn:t", {}, subject="WO-8"
    )
    by_id = Event.create("production.workorder.progressed.v1", "urn:t", {})

    appended = await log.append([*keyed, by_subject, by_id])

    assert {a.partition for a in appended[:5]} == {
        partition_for("WO-7", log.partitions)
    }
    assert appended[5].partition == partition_for("WO-8", log.partitions)
    assert appended[6].partition == partition_for(by_id.id, log.partitions)


async def test_read_keeps_key_order(log: EventLog) -> None:
    keys = [f"WO-{i}" for i in range(20)]
    for round_number in range(5):
        await log.append([make_event(key, round_number) for key in keys])

    records = await read_all(log)

    assert len(records) == 100
    assert [r.offset for r in records] == sorted(r.offset for r in records)
    for key in keys:
        numbers = [
            r.event.data["quantity"] for r in records if r.event.partitionkey == key
        ]
        assert numbers == ["0", "1", "2", "3", "4"], key


async def test_read_limit_and_positions(log: EventLog) -> None:
    appended = await log.append([make_event(f"WO-{i}", i) for i in range(40)])
    chosen = appended[0].partition
    in_chosen = [a.offset for a in appended if a.partition == chosen]

    limited = await log.read(dict.fromkeys(range(log.partitions), 0), 5)
    only_chosen = await log.read({chosen: 0}, 1000)
    after_first = await log.read({chosen: in_chosen[0]}, 1000)

    assert [r.offset for r in limited] == [a.offset for a in appended[:5]]
    assert [r.offset for r in only_chosen] == in_chosen
    assert [r.offset for r in after_first] == in_chosen[1:]
    assert await log.read({}, 10) == []
    assert await log.read({chosen: appended[-1].offset}, 10) == []


async def consume_all(
    log: EventLog, group: str, positions: dict[int, int], limit: int = 40
) -> list[Record]:
    """Consume every record after `positions` for a group, without committing."""
    current = dict(positions)
    records: list[Record] = []
    while page := await log.consume(group, current, limit):
        records.extend(page)
        for record in page:
            current[record.partition] = record.offset
    return records


async def test_consume_resumes_after_the_committed_offsets(
    log: EventLog, open_log: OpenLog
) -> None:
    appended = await log.append([make_event(f"WO-{i % 7}", i) for i in range(120)])
    offsets = [a.offset for a in appended]
    start = await log.committed("erp")

    first = await log.consume("erp", start, 50)
    done = dict(start)
    for record in first:
        done[record.partition] = record.offset
    await log.commit("erp", done)
    rest = await consume_all(log, "erp", done)
    # A second client of the group, as after a crash before the next commit,
    # gets every record after the committed offsets again.
    other = await open_log()
    again = await consume_all(other, "erp", await other.committed("erp"))

    assert [r.offset for r in first] == offsets[:50]
    assert [r.offset for r in rest] == offsets[50:]
    assert [r.offset for r in again] == offsets[50:]
    assert await other.committed("erp") == done


async def test_consume_after_seek_reads_again(log: EventLog) -> None:
    appended = await log.append([make_event(f"WO-{i % 3}", i) for i in range(30)])
    positions = await log.committed("erp")
    records = await consume_all(log, "erp", positions)
    for record in records:
        positions[record.partition] = record.offset
    await log.commit("erp", positions)

    moved = await log.seek("erp", offset=appended[10].offset)
    again = await consume_all(log, "erp", moved)

    assert len(records) == 30
    assert await log.lag("erp") == 20
    assert [r.offset for r in again] == [a.offset for a in appended[10:]]


async def test_nak_returns_the_record_after_its_delay(log: EventLog) -> None:
    await log.append([make_event("WO-1", i) for i in range(3)])
    positions = await log.committed("erp")
    records = await log.consume("erp", positions, 10)
    for record in records:
        positions[record.partition] = record.offset

    assert await log.nak("erp", records[1], 0.3)
    early = await log.consume("erp", positions, 10)
    back: list[Record] = []
    for _ in range(50):
        await asyncio.sleep(0.1)
        if back := await log.consume("erp", positions, 10):
            break

    assert early == []
    assert [r.offset for r in back] == [records[1].offset]
    assert back[0].event.id == records[1].event.id
    assert await log.consume("erp", positions, 10) == []


async def test_committed_unknown_group_is_zero_everywhere(log: EventLog) -> None:
    assert await log.committed("never-seen") == dict.fromkeys(range(log.partitions), 0)


async def test_commit_groups_are_isolated(log: EventLog) -> None:
    await log.append([make_event("WO-1")])

    await log.commit("erp", {0: 5, 1: 7})
    await log.commit("erp", {1: 9})

    erp = await log.committed("erp")
    assert erp[0] == 5
    assert erp[1] == 9
    assert all(erp[p] == 0 for p in range(2, log.partitions))
    assert await log.committed("wms") == dict.fromkeys(range(log.partitions), 0)


async def test_commit_survives_reopen(log: EventLog, open_log: OpenLog) -> None:
    await log.commit("erp", {2: 11})
    await log.close()

    reopened = await open_log()

    assert (await reopened.committed("erp"))[2] == 11


async def test_append_survives_reopen(log: EventLog, open_log: OpenLog) -> None:
    appended = await log.append([make_event("WO-1"), make_event("WO-2")])
    await log.close()

    reopened = await open_log()
    [more] = await reopened.append([make_event("WO-3")])

    records = await read_all(reopened)
    assert [r.offset for r in records] == [*(a.offset for a in appended), more.offset]
    assert more.offset > appended[-1].offset


async def test_seek_by_offset_resumes_there(log: EventLog) -> None:
    appended = await log.append([make_event(f"WO-{i}", i) for i in range(10)])
    target = appended[4].offset

    positions = await log.seek("erp", offset=target)
    records = await read_all(log, await log.committed("erp"))

    assert positions == await log.committed("erp")
    assert [r.offset for r in records] == [a.offset for a in appended[4:]]


async def test_seek_by_time_resumes_at_later_records(log: EventLog) -> None:
    await log.append([make_event(f"WO-{i}", i) for i in range(5)])
    await asyncio.sleep(0.05)
    moment = datetime.now(UTC)
    await asyncio.sleep(0.05)
    later = await log.append([make_event(f"WO-{i}", i) for i in range(5, 8)])

    await log.seek("erp", time=moment)
    records = await read_all(log, await log.committed("erp"))

    assert [r.offset for r in records] == [a.offset for a in later]


async def test_seek_by_time_after_end_is_empty(log: EventLog) -> None:
    await log.append([make_event("WO-1")])

    await log.seek("erp", time=datetime.now(UTC))

    assert await read_all(log, await log.committed("erp")) == []
    assert await log.lag("erp") == 0


async def test_seek_without_target_is_rejected(log: EventLog) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        await log.seek("erp")
    with pytest.raises(ValueError, match="exactly one"):
        await log.seek("erp", offset=1, time=datetime.now(UTC))


async def test_lag_counts_uncommitted_records(log: EventLog) -> None:
    appended = await log.append([make_event(f"WO-{i}", i) for i in range(12)])
    assert await log.lag("erp") == 12

    first = appended[0]
    await log.commit("erp", {first.partition: first.offset})
    assert await log.lag("erp") == 11

    await log.commit("erp", dict.fromkeys(range(log.partitions), appended[-1].offset))
    assert await log.lag("erp") == 0
    assert await log.lag("wms") == 12


async def test_end_offset_empty_log_is_zero(log: EventLog) -> None:
    assert await log.end_offset() == 0


async def test_trim_by_age_deletes_old_records(log: EventLog) -> None:
    old = await log.append([make_event(f"WO-{i}", i) for i in range(6)])
    await asyncio.sleep(0.4)
    new = await log.append([make_event(f"WO-{i}", i) for i in range(3)])

    deleted = await log.trim(max_age_seconds=0.2)

    assert deleted == len(old)
    assert [r.offset for r in await read_all(log)] == [a.offset for a in new]
    assert await log.trim(max_age_seconds=3600) == 0


async def test_trim_by_size_keeps_newest_records(log: EventLog) -> None:
    events = [make_event(f"WO-{i}", i) for i in range(20)]
    appended = await log.append(events)
    total = sum(len(e.to_json()) for e in events)

    assert await log.trim(max_bytes=total * 10) == 0
    deleted = await log.trim(max_bytes=total // 2)

    survivors = [r.offset for r in await read_all(log)]
    assert 0 < deleted < len(events)
    assert survivors == [a.offset for a in appended[deleted:]]
    assert await log.trim(max_bytes=0) == len(survivors)
    assert await read_all(log) == []


async def test_trim_keeps_offsets_and_positions_valid(log: EventLog) -> None:
    appended = await log.append([make_event(f"WO-{i}", i) for i in range(10)])
    await log.commit("erp", {appended[0].partition: appended[0].offset})

    await log.trim(max_bytes=0)
    [after] = await log.append([make_event("WO-99")])
    records = await read_all(log, await log.committed("erp"))

    assert after.offset > appended[-1].offset
    assert await log.end_offset() == after.offset
    assert [r.offset for r in records] == [after.offset]
    assert await log.lag("erp") == 1


async def test_append_concurrent_callers_unique_offsets(
    log: EventLog, open_log: OpenLog
) -> None:
    async def producer(key: str) -> list[int]:
        offsets = []
        for number in range(5):
            [appended] = await log.append([make_event(key, number)])
            offsets.append(appended.offset)
        return offsets

    keys = [f"WO-{i}" for i in range(200)]
    results = await asyncio.gather(*(producer(key) for key in keys))
    await log.close()
    reopened = await open_log()
    records = await read_all(reopened)

    all_offsets = [offset for offsets in results for offset in offsets]
    assert len(set(all_offsets)) == 1000
    assert all(offsets == sorted(offsets) for offsets in results)
    assert sorted(r.offset for r in records) == sorted(all_offsets)
    for key, offsets in zip(keys, results, strict=True):
        mine = set(offsets)
        stored = [r.event.data["quantity"] for r in records if r.offset in mine]
        assert stored == ["0", "1", "2", "3", "4"], key


async def test_wait_for_append_wakes_on_append(log: EventLog) -> None:
    await read_all(log)
    waiter = asyncio.create_task(log.wait_for_append(10.0))
    await asyncio.sleep(0.05)
    started = time.monotonic()

    await log.append([make_event("WO-1")])
    await asyncio.wait_for(waiter, 5.0)

    assert time.monotonic() - started < 2.0


async def test_wait_for_append_times_out_without_append(log: EventLog) -> None:
    await read_all(log)
    started = time.monotonic()

    await log.wait_for_append(0.3)

    assert time.monotonic() - started >= 0.25


async def test_wait_for_append_missed_append_returns(
    log: EventLog,
) -> None:
    assert await read_all(log) == []
    await log.append([make_event("WO-1")])
    started = time.monotonic()

    await log.wait_for_append(5.0)

    assert time.monotonic() - started < 1.0


async def test_wait_for_append_sees_other_client(
    log: EventLog, open_log: OpenLog
) -> None:
    other = await open_log()
    await read_all(log)
    waiter = asyncio.create_task(log.wait_for_append(10.0))
    await asyncio.sleep(0.05)
    started = time.monotonic()

    await other.append([make_event("WO-1")])
    await asyncio.wait_for(waiter, 5.0)

    assert time.monotonic() - started < 2.0
    assert len(await read_all(log)) == 1


# Backend modules star-import exactly the test functions.
__all__ = sorted(name for name in dir() if name.startswith("test_"))


async def test_seek_past_end_resumes_at_next_append(log: EventLog) -> None:
    await log.append([make_event("k", n) for n in range(3)])

    await log.seek("late", offset=1_000_000)
    appended = await log.append([make_event("k", 99)])
    records = await log.read(await log.committed("late"), 10)

    assert [r.offset for r in records] == [appended[0].offset]
