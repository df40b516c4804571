"""ShdrSource and ShdrParser against okuma.txt replayed by a local TCP adapter."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from mtconnect_replay import (
    ShdrAdapter,
    okuma_items,
    okuma_lines,
    part_counts,
    state_changes,
)
from tests.connectors.event_recorder import Recorder

from plantbus.connectors.mtconnect.mapping import (
    MACHINE_DOWN,
    MACHINE_UP,
    MachineMapper,
)
from plantbus.connectors.mtconnect.shdr import ShdrLineError, ShdrParser, ShdrSource

# What okuma.txt yields, worked out by hand from its EXECUTION (pexecution),
# PART_COUNT (ppartcount) and PROGRAM (pprogram) values. The file contains four
# adapter sessions; availability stays AVAILABLE and the emergency stop ARMED
# throughout, so it yields no machine down or up events.
OKUMA_STATES = [
    ("2022-08-08T13:51:34.7167146Z", "READY", None, "IMTS-2022-2-HOB.MIN"),
    ("2022-08-08T13:51:36.7711738Z", "ACTIVE", "READY", "IMTS-2022-2-HOB.MIN"),
    (
        "2022-08-08T13:54:43.5007997Z",
        "PROGRAM_COMPLETED",
        "ACTIVE",
        "IMTS-2022-2-HOB.MIN",
    ),
    (
        "2022-08-08T13:54:43.7499767Z",
        "READY",
        "PROGRAM_COMPLETED",
        "IMTS-2022-2-HOB.MIN",
    ),
    ("2022-08-08T13:37:22.7959508Z", "ACTIVE", "READY", "IMTS-2022-1E-mm.MIN"),
    (
        "2022-08-08T13:47:27.7586294Z",
        "PROGRAM_COMPLETED",
        "ACTIVE",
        "IMTS-2022-1E-mm.MIN",
    ),
    (
        "2022-08-08T13:47:28.0038036Z",
        "READY",
        "PROGRAM_COMPLETED",
        "IMTS-2022-1E-mm.MIN",
    ),
    ("2022-08-08T14:21:10.5107196Z", "ACTIVE", "READY", "IMTS-2022-4B-mm.MIN"),
    (
        "2022-08-08T14:30:19.4426011Z",
        "PROGRAM_COMPLETED",
        "ACTIVE",
        "IMTS-2022-4B-mm.MIN",
    ),
    (
        "2022-08-08T14:30:19.6727646Z",
        "READY",
        "PROGRAM_COMPLETED",
        "IMTS-2022-4B-mm.MIN",
    ),
    ("2022-08-08T13:57:44.3292338Z", "ACTIVE", "READY", "IMTS-2022-3-TRAN.MIN"),
    (
        "2022-08-08T13:58:01.0811320Z",
        "PROGRAM_COMPLETED",
        "ACTIVE",
        "IMTS-2022-3-TRAN.MIN",
    ),
    (
        "2022-08-08T13:58:01.3203019Z",
        "READY",
        "PROGRAM_COMPLETED",
        "IMTS-2022-3-TRAN.MIN",
    ),
]
# (time, count, delta); a smaller count than before is a counter reset, whose
# delta is the new count.
OKUMA_COUNTS = [
    ("2022-08-08T13:51:34.7167146Z", 0, None),
    ("2022-08-08T13:54:43.8280317Z", 1, 1),
    ("2022-08-08T13:37:18.8501483Z", 0, 0),
    ("2022-08-08T13:47:27.8366849Z", 1, 1),
    ("2022-08-08T14:21:07.6436824Z", 2, 1),
    ("2022-08-08T14:30:19.5196563Z", 3, 1),
    ("2022-08-08T13:57:41.9185216Z", 0, 0),
    ("2022-08-08T13:58:01.1591879Z", 1, 1),
]
OKUMA_EVENTS = len(OKUMA_STATES) + len(OKUMA_COUNTS)


def _source(port: int, samples: Path, **options: float) -> ShdrSource:
    items = okuma_items(samples)
    return ShdrSource(
        "okuma-shdr",
        "127.0.0.1",
        port,
        lambda: ShdrParser("OKUMA", items),
        MachineMapper("okuma-shdr", machine_ids={"OKUMA": "M-OKUMA-1"}),
        reconnect_initial=0.05,
        reconnect_max=0.2,
        **options,
    )


async def test_shdr_source_maps_okuma_log_over_tcp(samples_dir: Path) -> None:
    adapter = ShdrAdapter(okuma_lines(samples_dir))
    await adapter.start()
    recorder = Recorder()
    source = _source(adapter.port, samples_dir)
    try:
        async with recorder.running(source, stop_timeout=5):
            await recorder.wait_for(OKUMA_EVENTS)
            # Let the rest of the file through to be sure nothing else
            # follows; the source counts the adapter's `* PONG` lines too.
            async with asyncio.timeout(10):
                while source.lines < 10_770 + adapter.pings:
                    await asyncio.sleep(0.01)
    finally:
        await adapter.close()

    assert state_changes(recorder.order) == OKUMA_STATES
    assert part_counts(recorder.order) == OKUMA_COUNTS
    assert [e for e in recorder.order if e.type in (MACHINE_DOWN, MACHINE_UP)] == []
    assert len(recorder.order) == OKUMA_EVENTS
    assert recorder.dead_letters == []
    assert source.lines == 10_770 + adapter.pings
    first = recorder.order[0]
    assert first.time == "2022-08-08T13:51:34.7167146Z"
    assert first.partitionkey == "M-OKUMA-1"
    assert first.data["machine_id"] == "M-OKUMA-1"
    assert first.source == "mtconnect:okuma-shdr"
    assert adapter.pings >= 1


async def test_shdr_source_reconnects_after_adapter_closes(samples_dir: Path) -> None:
    adapter = ShdrAdapter(okuma_lines(samples_dir), close_after=5_000)
    await adapter.start()
    recorder = Recorder()
    source = _source(adapter.port, samples_dir)
    try:
        async with recorder.running(source, stop_timeout=5):
            await recorder.wait_for(OKUMA_EVENTS)
    finally:
        await adapter.close()

    assert adapter.connections == 2
    assert source.connections == 2
    assert state_changes(recorder.order) == OKUMA_STATES
    assert part_counts(recorder.order) == OKUMA_COUNTS


async def test_shdr_source_reconnects_when_heartbeat_stops(
    samples_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The adapter requests a 100 ms heartbeat, then hangs after 3,000 lines
    # without closing the socket; the source gives up after 200 ms of silence.
    adapter = ShdrAdapter(okuma_lines(samples_dir), pong_ms=100, silent_after=3_000)
    await adapter.start()
    recorder = Recorder()
    source = _source(adapter.port, samples_dir)
    caplog.set_level(logging.WARNING, "plantbus.connectors.mtconnect")
    try:
        async with recorder.running(source, stop_timeout=5):
            await recorder.wait_for(OKUMA_EVENTS)
    finally:
        await adapter.close()

    assert adapter.connections == 2
    assert "no data for 0.2s" in caplog.text
    assert state_changes(recorder.order) == OKUMA_STATES


async def test_shdr_source_rejects_bad_lines(samples_dir: Path) -> None:
    lines = okuma_lines(samples_dir)
    bad = [
        b"yesterday|avail|AVAILABLE\n",
        b"\xff\xfe2022-08-08T13:51:40Z|avail|AVAILABLE\n",
        b"2022-08-08T13:51:40Z||READY\n",
    ]
    # Put the bad lines after the first session's start, between good lines.
    adapter = ShdrAdapter([*lines[:30], *bad, *lines[30:]])
    await adapter.start()
    recorder = Recorder()
    source = _source(adapter.port, samples_dir)
    try:
        async with recorder.running(source, stop_timeout=5):
            await recorder.wait_for(OKUMA_EVENTS)
    finally:
        await adapter.close()

    assert [letter.payload for letter in recorder.dead_letters] == bad
    assert [letter.details["line"] for letter in recorder.dead_letters] == [31, 32, 33]
    assert "'yesterday' is not an RFC 3339 time" in recorder.dead_letters[0].error
    assert "utf-8" in recorder.dead_letters[1].error
    assert "empty data item name" in recorder.dead_letters[2].error
    assert {letter.stage for letter in recorder.dead_letters} == {"ingest"}
    assert {letter.source for letter in recorder.dead_letters} == {"okuma-shdr"}
    assert state_changes(recorder.order) == OKUMA_STATES
    assert part_counts(recorder.order) == OKUMA_COUNTS


async def test_shdr_source_emits_down_and_up(samples_dir: Path) -> None:
    lines = [
        *okuma_lines(samples_dir)[:30],
        b"2022-08-08T15:00:00.0000000Z|avail|UNAVAILABLE\n",
        b"2022-08-08T15:00:05.0000000Z|estop|TRIGGERED\n",
        b"2022-08-08T15:10:00.0000000Z|avail|AVAILABLE\n",
        b"2022-08-08T15:12:30.5000000Z|estop|ARMED\n",
    ]
    adapter = ShdrAdapter(lines)
    await adapter.start()
    recorder = Recorder()
    source = _source(adapter.port, samples_dir)
    try:
        async with recorder.running(source, stop_timeout=5):
            await recorder.wait_for(4)
    finally:
        await adapter.close()

    down = [e.data for e in recorder.order if e.type == MACHINE_DOWN]
    up = [e.data for e in recorder.order if e.type == MACHINE_UP]
    assert down == [
        {
            "machine_id": "M-OKUMA-1",
            "since": "2022-08-08T15:00:00.0000000Z",
            "reason_code": "UNAVAILABLE",
            "reason": "MTConnect: the machine reports AVAILABILITY UNAVAILABLE.",
        }
    ]
    # The machine stays down until the emergency stop is armed again too.
    assert up == [
        {
            "machine_id": "M-OKUMA-1",
            "since": "2022-08-08T15:12:30.5000000Z",
            "downtime_seconds": "750.5",
        }
    ]


def test_shdr_parser_reads_conditions_and_assets(samples_dir: Path) -> None:
    parser = ShdrParser("OKUMA", okuma_items(samples_dir))

    [condition] = parser.feed("2022-08-08T13:51:34Z|system|FAULT|E12|2|HIGH|Oil low\n")
    normal = parser.feed("2022-08-08T13:51:35Z|system|NORMAL\n")
    asset = parser.feed("2022-08-08T13:43:36Z|@ASSET@|T1|CuttingTool|--multiline--AB\n")
    body = parser.feed("<CuttingTool>|avail|UNAVAILABLE</CuttingTool>\n")
    end = parser.feed("--multiline--AB\n")
    after = parser.feed("2022-08-08T13:51:36Z|avail|UNAVAILABLE|pexecution|ACTIVE\n")

    assert (condition.type, condition.category, condition.value) == (
        "SYSTEM",
        "CONDITION",
        "FAULT",
    )
    assert [o.value for o in normal] == ["NORMAL"]
    assert asset == body == end == []
    assert [(o.type, o.value) for o in after] == [
        ("AVAILABILITY", "UNAVAILABLE"),
        ("EXECUTION", "ACTIVE"),
    ]


def test_shdr_parser_reads_pong_and_timestamps(samples_dir: Path) -> None:
    parser = ShdrParser("OKUMA", okuma_items(samples_dir))

    assert parser.feed("* PONG 10000\n") == []
    assert parser.feed("*adapterVersion:UNAVAILABLE\n") == []
    [local] = parser.feed("2022-08-08T13:51:34.5|pexecution|READY\n")
    [duration] = parser.feed("2022-08-08T13:51:35Z@100.0|pexecution|ACTIVE\n")

    assert parser.heartbeat_ms == 10_000
    assert local.timestamp == "2022-08-08T13:51:34.5Z"
    assert duration.timestamp == "2022-08-08T13:51:35Z"


def test_shdr_parser_rejects_item_without_value(samples_dir: Path) -> None:
    parser = ShdrParser("OKUMA", okuma_items(samples_dir))

    with pytest.raises(ShdrLineError, match="'system' has no value at the end"):
        parser.feed("2022-08-08T13:51:34Z|avail|AVAILABLE|system\n")


def test_shdr_parser_uses_configured_item_types() -> None:
    parser = ShdrParser("LATHE-2", item_types={"exec": "EXECUTION", "c1": "CONDITION"})

    observations = parser.feed("2024-01-02T03:04:05Z|c1|WARNING||||hot|exec|FEED_HOLD")

    assert [(o.device, o.type, o.value) for o in observations] == [
        ("LATHE-2", "CONDITION", "WARNING"),
        ("LATHE-2", "EXECUTION", "FEED_HOLD"),
    ]
