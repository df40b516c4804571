"""JetStreamLog: the shared EventLog contract plus JetStream-specific behaviour.

The tests run against the machine's NATS server on 127.0.0.1:4222, each with a
stream name of its own, and delete their stream (with its consumers) afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats.js.api import AckPolicy
from nats.js.errors import NotFoundError

from plantbus.backbone.jetstream import JetStreamLog
from plantbus.backbone.jetstream_groups import ConsumerGone, Generation
from plantbus.backbone.log import EventLog
from plantbus.errors import BackboneError

from .contract import *  # noqa: F403
from .contract import OpenLog, consume_all, make_event, read_all
from .nats_servers import machine_nats

PARTITIONS = 8


@pytest.fixture(scope="session")
def nats_url() -> str:
    """Return the URL of the machine's NATS server with JetStream."""
    return machine_nats()


@pytest.fixture
def stream_name() -> str:
    """Return a stream name that no other test uses."""
    return f"pbtest-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def open_log(nats_url: str, stream_name: str) -> AsyncIterator[OpenLog]:
    """Open started JetStreamLog handles on one stream; delete it afterwards."""
    handles: list[JetStreamLog] = []

    async def opener() -> EventLog:
        log = JetStreamLog(nats_url, stream_name, partitions=PARTITIONS)
        await log.start()
        handles.append(log)
        return log

    yield opener
    for handle in handles:
        await handle.close()
    await _delete_stream(nats_url, stream_name)


@pytest.fixture
async def log(open_log: OpenLog) -> EventLog:
    """Return a started, empty JetStreamLog."""
    return await open_log()


async def _delete_stream(url: str, stream: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    for action in (
        js.delete_stream(stream),
        js.delete_key_value(f"{stream}-offsets"),
    ):
        with contextlib.suppress(NotFoundError):
            await action
    await nc.close()


async def test_jetstream_log_subject_layout(
    log: EventLog, nats_url: str, stream_name: str
) -> None:
    [appended] = await log.append([make_event("WO-1")])

    nc = await nats.connect(nats_url)
    message = await nc.jetstream().get_msg(stream_name, appended.offset)
    await nc.close()

    assert message.subject == (
        f"{stream_name}.p.{appended.partition}.production.workorder.progressed.v1"
    )
    assert message.headers is not None
    assert message.headers["Nats-Msg-Id"] == appended.event_id


async def test_jetstream_log_partition_count_is_fixed(
    nats_url: str, stream_name: str, open_log: OpenLog
) -> None:
    await open_log()

    with pytest.raises(BackboneError, match="created with 8 partitions"):
        await JetStreamLog(nats_url, stream_name, partitions=4).start()


async def test_jetstream_log_limits_map_to_stream(
    nats_url: str, stream_name: str
) -> None:
    log = JetStreamLog(
        nats_url,
        stream_name,
        max_age_seconds=3600,
        max_bytes=10_000_000,
        duplicate_window_seconds=120,
    )
    await log.start()
    nc = await nats.connect(nats_url)
    info = await nc.jetstream().stream_info(stream_name)
    await nc.close()
    await log.close()
    await _delete_stream(nats_url, stream_name)

    assert info.config.max_age == pytest.approx(3600)
    assert info.config.max_bytes == 10_000_000
    assert info.config.duplicate_window == pytest.approx(120)
    assert info.config.subjects == [f"{stream_name}.p.>"]


async def test_jetstream_log_duplicate_after_window_stored(
    nats_url: str, stream_name: str
) -> None:
    log = JetStreamLog(nats_url, stream_name, duplicate_window_seconds=1.0)
    await log.start()
    event = make_event("WO-1")

    [first] = await log.append([event])
    [within] = await log.append([event])
    await asyncio.sleep(1.5)
    [after] = await log.append([event])
    await log.close()
    await _delete_stream(nats_url, stream_name)

    assert within.duplicate is True
    assert within.offset == first.offset
    assert after.duplicate is False
    assert after.offset > first.offset


async def test_jetstream_log_foreign_stream_is_rejected(
    nats_url: str, stream_name: str
) -> None:
    nc = await nats.connect(nats_url)
    await nc.jetstream().add_stream(name=stream_name, subjects=[f"{stream_name}.x"])
    await nc.close()

    with pytest.raises(BackboneError, match="not a plantbus event log"):
        await JetStreamLog(nats_url, stream_name).start()
    await _delete_stream(nats_url, stream_name)


async def test_jetstream_log_bad_stream_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="letters, digits"):
        JetStreamLog(stream="plant.bus")


async def test_jetstream_log_unreachable_server_names_url() -> None:
    log = JetStreamLog("nats://127.0.0.1:1", "unreachable", connect_seconds=1.0)

    with pytest.raises(BackboneError, match=r"127\.0\.0\.1:1\b"):
        await asyncio.wait_for(log.start(), 20)


async def test_jetstream_log_group_name_any_characters(log: EventLog) -> None:
    await log.commit("erp postings/P1 ü", {3: 42})

    assert (await log.committed("erp postings/P1 ü"))[3] == 42
    assert (await log.committed("erp"))[3] == 0


async def test_jetstream_log_concurrent_commits_keep_both(
    log: EventLog, open_log: OpenLog
) -> None:
    other = await open_log()

    await asyncio.gather(
        *(log.commit("erp", {p: 10 + p}) for p in range(0, PARTITIONS, 2)),
        *(other.commit("erp", {p: 10 + p}) for p in range(1, PARTITIONS, 2)),
    )

    assert await log.committed("erp") == {p: 10 + p for p in range(PARTITIONS)}


async def test_jetstream_log_read_reuses_consumer(log: EventLog) -> None:
    assert isinstance(log, JetStreamLog)
    await log.append([make_event(f"WO-{i}", i) for i in range(300)])
    positions = dict.fromkeys(range(PARTITIONS), 0)

    pages = []
    while page := await log.read(positions, 50):
        pages.append(page)
        for record in page:
            positions[record.partition] = record.offset

    assert log._reader is not None
    assert len(log._reader._cursors) == 1
    assert [len(p) for p in pages] == [50] * 6
    offsets = [r.offset for p in pages for r in p]
    assert offsets == sorted(offsets)
    assert len(set(offsets)) == 300


async def test_jetstream_log_read_after_idle_partition(log: EventLog) -> None:
    appended = await log.append([make_event("WO-A", i) for i in range(50)])
    busy = appended[0].partition
    idle = next(p for p in range(PARTITIONS) if p != busy)
    [late] = await log.append([make_event("WO-A", 50)])

    records = await log.read({idle: 0, busy: appended[-1].offset}, 10)

    assert [r.offset for r in records] == [late.offset]
    assert len(await read_all(log)) == 51


async def test_jetstream_log_trim_keeps_young_records(
    log: EventLog,
) -> None:
    # nats-server 2.9.10 deletes every message for a purge request with seq 1,
    # so a trim that finds nothing old must send no purge.
    await log.append([make_event(f"WO-{i % 5}", i) for i in range(40)])

    removed = await log.trim(max_age_seconds=7 * 24 * 3600)
    bytes_removed = await log.trim(max_bytes=10**9)

    assert removed == 0
    assert bytes_removed == 0
    assert len(await read_all(log)) == 40


async def test_jetstream_log_long_group_name_fits(log: EventLog) -> None:
    group = "erp-" + "x" * 300

    await log.commit(group, {1: 3})

    assert (await log.committed(group))[1] == 3
    assert (await log.committed(group + "y"))[1] == 0


async def test_jetstream_log_groups_are_durable_consumers(
    log: EventLog, nats_url: str, stream_name: str
) -> None:
    appended = await log.append([make_event(f"WO-{i % 4}", i) for i in range(40)])
    positions = await log.committed("erp")
    records = await consume_all(log, "erp", positions)
    for record in records[:30]:
        positions[record.partition] = record.offset
    await log.commit("erp", positions)

    nc = await nats.connect(nats_url)
    infos = await nc.jsm().consumers_info(stream_name)
    await nc.close()
    durable = {info.config.filter_subject: info for info in infos}

    assert len(records) == 40
    assert len(durable) == PARTITIONS
    for partition in range(PARTITIONS):
        info = durable[f"{stream_name}.p.{partition}.>"]
        assert info.config.durable_name == info.name
        assert info.config.ack_policy == AckPolicy.ALL
        assert info.name.startswith(f"g-erp-p{partition}-g")
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        assert max(floor, info.config.opt_start_seq - 1) == positions[partition]
    assert await log.lag("erp") == 10
    assert appended[-1].offset == records[-1].offset


async def test_jetstream_log_replaced_consumer_stops_old_reader(
    log: EventLog, open_log: OpenLog
) -> None:
    await log.append([make_event("WO-1", i) for i in range(20)])
    start = await log.committed("erp")
    old_reader = await log.consume("erp", start, 5)
    positions = dict(start)
    for record in old_reader:
        positions[record.partition] = record.offset

    # Another worker takes the partitions over from the committed offsets,
    # as after a lease moved: the old reader's consumers are replaced.
    other = await open_log()
    by_other = await consume_all(other, "erp", await other.committed("erp"))

    assert len(old_reader) == 5
    assert len(by_other) == 20
    with pytest.raises(ConsumerGone, match="was deleted"):
        await log.consume("erp", positions, 5)
    with pytest.raises(ConsumerGone, match="was deleted"):
        await log.commit("erp", positions)
    assert await other.committed("erp") == start


async def test_jetstream_log_missed_delivery_reads_again(
    log: EventLog, nats_url: str, stream_name: str
) -> None:
    appended = await log.append([make_event("WO-1", i) for i in range(30)])
    partition = appended[0].partition
    positions = await log.committed("erp")
    first = await log.consume("erp", positions, 10)
    for record in first:
        positions[record.partition] = record.offset
    await log.commit("erp", positions)
    second = await log.consume("erp", positions, 5)
    for record in second:
        positions[record.partition] = record.offset

    # A foreign client pulls four records from the group's consumer, so the
    # reader sees a jump in the consumer's delivery sequence.
    nc = await nats.connect(nats_url)
    [info] = [
        i
        for i in await nc.jsm().consumers_info(stream_name)
        if i.name.startswith(f"g-erp-p{partition}-")
    ]
    stolen = await nc.jetstream().pull_subscribe_bind(info.name, stream=stream_name)
    assert len(await stolen.fetch(4, timeout=2)) == 4
    await nc.close()
    rest = await consume_all(log, "erp", positions)
    for record in rest:
        positions[record.partition] = record.offset
    await log.commit("erp", positions)

    offsets = [r.offset for r in (*first, *second, *rest)]
    assert offsets == [a.offset for a in appended]
    assert await log.lag("erp") == 0
    assert (await log.committed("erp"))[partition] == appended[-1].offset


async def test_jetstream_log_starts_from_earlier_bucket(
    open_log: OpenLog, nats_url: str, stream_name: str
) -> None:
    first = await open_log()
    appended = await first.append([make_event("WO-1", i) for i in range(6)])
    partition = appended[0].partition
    # Earlier versions kept a group's offsets in the bucket `<stream>-offsets`.
    nc = await nats.connect(nats_url)
    bucket = await nc.jetstream().create_key_value(bucket=f"{stream_name}-offsets")
    await bucket.put("g.erp", f'{{"{partition}": {appended[2].offset}}}'.encode())
    await nc.close()

    upgraded = await open_log()
    start = await upgraded.committed("erp")
    records = await consume_all(upgraded, "erp", start)
    positions = dict(start)
    for record in records:
        positions[record.partition] = record.offset
    await upgraded.commit("erp", positions)

    assert start[partition] == appended[2].offset
    assert [r.offset for r in records] == [a.offset for a in appended[3:]]
    assert (await upgraded.committed("erp"))[partition] == appended[-1].offset


async def test_jetstream_log_paused_partition_keeps_floor(
    log: EventLog, open_log: OpenLog
) -> None:
    appended = await log.append([make_event("WO-1", i) for i in range(8)])
    partition = appended[0].partition
    positions = await log.committed("erp")
    records = await log.consume("erp", positions, 5)
    await log.commit("erp", {partition: records[1].offset})
    # The partition is left out of reads for a while (its lease is being
    # handed back with records in work), then read again from where the
    # reader was, not from the committed offset.
    idle = (partition + 1) % PARTITIONS
    await log.consume("erp", {idle: positions[idle]}, 5)
    rest = await log.consume(
        "erp", {idle: positions[idle], partition: records[-1].offset}, 10
    )
    committed = await log.committed("erp")
    # A crash now: another client starts from the committed offsets.
    other = await open_log()
    again = await consume_all(other, "erp", await other.committed("erp"))

    assert [r.offset for r in rest] == [a.offset for a in appended[5:]]
    assert committed[partition] == records[1].offset
    assert [r.offset for r in again] == [a.offset for a in appended[2:]]


async def test_jetstream_log_partition_taken_back_reads_on(
    log: EventLog, open_log: OpenLog
) -> None:
    appended = await log.append([make_event("WO-1", i) for i in range(3)])
    partition = appended[0].partition
    start = await log.committed("erp")
    first = await consume_all(log, "erp", {partition: start[partition]})
    await log.commit("erp", {partition: first[-1].offset})
    # The partition moves to another worker, which reads nothing new, and
    # then comes back to the first worker at the same offset while the other
    # has not noticed yet that it lost it.
    await log.consume("erp", {}, 5)
    other = await open_log()
    assert await other.consume("erp", {partition: first[-1].offset}, 5) == []
    [late] = await log.append([make_event("WO-1", 3)])

    back = await log.consume("erp", {partition: first[-1].offset}, 5)

    assert [r.offset for r in back] == [late.offset]
    with pytest.raises(ConsumerGone):
        await other.consume("erp", {partition: first[-1].offset}, 5)


async def test_jetstream_log_left_partition_taken_back(
    log: EventLog, open_log: OpenLog
) -> None:
    assert isinstance(log, JetStreamLog)
    appended = await log.append([make_event("WO-1", i) for i in range(3)])
    partition = appended[0].partition
    records = await consume_all(log, "erp", {partition: 0})
    await log.commit("erp", {partition: records[-1].offset})
    # The lease moves away and back with no read in between, as when the
    # worker is at its in-flight limit.
    await log.leave("erp", [partition])
    other = await open_log()
    assert await other.consume("erp", {partition: records[-1].offset}, 5) == []
    [late] = await log.append([make_event("WO-1", 3)])

    back = await log.consume("erp", {partition: records[-1].offset}, 5)

    assert [r.offset for r in back] == [late.offset]


async def test_jetstream_log_attach_retried_after_timeout(
    log: EventLog, open_log: OpenLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(log, JetStreamLog)
    assert log._groups is not None
    appended = await log.append([make_event("WO-1", i) for i in range(3)])
    partition = appended[0].partition
    records = await consume_all(log, "erp", {partition: 0})
    await log.consume("erp", {}, 5)
    other = await open_log()
    assert await other.consume("erp", {partition: records[-1].offset}, 5) == []
    [late] = await log.append([make_event("WO-1", 3)])
    generations = log._groups.generations
    failures = [TimeoutError("injected")]

    async def flaky(group: str) -> dict[int, list[Generation]]:
        if failures:
            raise failures.pop()
        return await generations(group)

    monkeypatch.setattr(log._groups, "generations", flaky)
    back = await log.consume("erp", {partition: records[-1].offset}, 5)

    assert failures == []
    assert [r.offset for r in back] == [late.offset]
