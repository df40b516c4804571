"""AgentSource against a local agent that serves okuma.txt as MTConnectStreams."""

from __future__ import annotations

import asyncio
import itertools
import logging
from pathlib import Path

import aiohttp
import pytest
from mtconnect_replay import (
    ReplayAgent,
    okuma_items,
    okuma_lines,
    okuma_observations,
    part_counts,
    sequence_ranges,
    state_changes,
)
from prometheus_client import REGISTRY
from test_mtconnect_shdr import OKUMA_COUNTS, OKUMA_EVENTS, OKUMA_STATES
from tests.connectors.event_recorder import Recorder

from plantbus.connectors.mtconnect.agent import AgentSource
from plantbus.connectors.mtconnect.mapping import (
    STATE_CHANGED,
    MachineMapper,
)
from plantbus.connectors.mtconnect.shdr import ShdrParser
from plantbus.connectors.mtconnect.streams import StreamsError, parse_streams

# Observations of okuma.txt that an agent stores: every value of the file
# except the four of ApplicationInstallDate, which Devices.xml does not define.
OKUMA_OBSERVATIONS = 25_503


def _source(agent: ReplayAgent, *, count: int = 1000) -> AgentSource:
    return AgentSource(
        "okuma-agent",
        agent.url,
        MachineMapper("okuma-agent"),
        count=count,
        poll_interval=0.02,
        reconnect_initial=0.05,
        reconnect_max=0.2,
    )


async def _agent(samples: Path, **options: int) -> ReplayAgent:
    agent = ReplayAgent(okuma_observations(samples), okuma_items(samples), **options)
    await agent.start()
    return agent


async def test_agent_source_follows_sequences_of_okuma_log(samples_dir: Path) -> None:
    agent = await _agent(samples_dir)
    recorder = Recorder()
    source = _source(agent)
    try:
        async with recorder.running(source, stop_timeout=5):
            # The source reads the empty agent's /current first. Then the agent
            # receives the file in steps while the source polls /sample.
            async with asyncio.timeout(5):
                while source.next_sequence != 1:
                    await asyncio.sleep(0.01)
            while agent.pending:
                agent.release(2_500)
                async with asyncio.timeout(10):
                    while source.next_sequence != agent.last_sequence + 1:
                        await asyncio.sleep(0.01)
    finally:
        await agent.close()

    assert agent.last_sequence == OKUMA_OBSERVATIONS
    assert state_changes(recorder.order) == OKUMA_STATES
    assert part_counts(recorder.order) == OKUMA_COUNTS
    assert len(recorder.order) == OKUMA_EVENTS
    assert recorder.dead_letters == []
    assert source.lost_observations == 0

    # Every /sample requested from the nextSequence of the response before, so the
    # pages tile 1 to the last sequence: nothing read twice or skipped.
    pages = agent.pages
    assert pages[0][0] == 1
    assert pages[-1][1] == OKUMA_OBSERVATIONS + 1
    assert all(following[0] == page[1] for page, following in itertools.pairwise(pages))
    assert max(end - start for start, end in pages) == 1000


async def test_agent_source_matches_shdr_ids(samples_dir: Path) -> None:
    agent = await _agent(samples_dir)
    agent.release(OKUMA_OBSERVATIONS)
    recorder = Recorder()
    source = _source(agent, count=30_000)
    # Start past /current, as a source that has followed the agent all along.
    source.instance_id = str(agent.instance_id)
    source.next_sequence = 1
    try:
        async with aiohttp.ClientSession() as http:
            await source.poll(http, recorder.ingest, recorder.reject)
    finally:
        await agent.close()

    parser = ShdrParser("OKUMA", okuma_items(samples_dir))
    mapper = MachineMapper("okuma-agent")
    expected = [
        event.id
        for line in okuma_lines(samples_dir)
        for observation in parser.feed(line.decode())
        for event in mapper.map(observation)
    ]
    assert [e.id for e in recorder.order] == expected
    assert source.next_sequence == OKUMA_OBSERVATIONS + 1


async def test_agent_source_reports_lost_observations(
    samples_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    agent = await _agent(samples_dir, buffer_size=100)
    recorder = Recorder()
    source = _source(agent)
    before = (
        REGISTRY.get_sample_value(
            "plantbus_mtconnect_lost_observations_total", {"source": "okuma-agent"}
        )
        or 0.0
    )
    caplog.set_level(logging.ERROR, "plantbus.connectors.mtconnect")
    try:
        async with aiohttp.ClientSession() as http:
            agent.release(10)
            await source.poll(http, recorder.ingest, recorder.reject)
            assert source.next_sequence == 11
            # 500 more arrive; the buffer keeps only sequence 411 to 510.
            agent.release(500)
            skipped = await source.poll(http, recorder.ingest, recorder.reject)
            read = await source.poll(http, recorder.ingest, recorder.reject)
    finally:
        await agent.close()

    assert skipped is None
    assert read == 100
    assert source.lost_observations == 400
    assert source.next_sequence == 511
    after = REGISTRY.get_sample_value(
        "plantbus_mtconnect_lost_observations_total", {"source": "okuma-agent"}
    )
    assert after == before + 400
    assert "Lost 400 observations" in caplog.text
    assert "sequence 11 to 410 left the agent's buffer" in caplog.text
    assert sequence_ranges(agent.requests) == [11, 411]


async def test_agent_source_resyncs_headerless_error(
    samples_dir: Path,
) -> None:
    agent = await _agent(samples_dir, buffer_size=100)
    agent.error_header = False
    recorder = Recorder()
    source = _source(agent)
    try:
        async with aiohttp.ClientSession() as http:
            agent.release(10)
            await source.poll(http, recorder.ingest, recorder.reject)
            agent.release(500)
            skipped = await source.poll(http, recorder.ingest, recorder.reject)
            read = await source.poll(http, recorder.ingest, recorder.reject)
    finally:
        await agent.close()

    assert skipped is None
    assert read == 100
    assert source.lost_observations == 400
    assert agent.requests == [
        "/current",
        "/sample?from=11&count=1000",
        "/current",
        "/sample?from=411&count=1000",
    ]


async def test_agent_source_rereads_current_after_agent_restart(
    samples_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    agent = await _agent(samples_dir)
    recorder = Recorder()
    source = _source(agent)
    caplog.set_level(logging.WARNING, "plantbus.connectors.mtconnect")
    try:
        async with aiohttp.ClientSession() as http:
            agent.release(300)
            await source.poll(http, recorder.ingest, recorder.reject)
            agent.release(200)
            await source.poll(http, recorder.ingest, recorder.reject)
            old_instance = source.instance_id
            agent.restart()
            agent.release(50)
            await source.poll(http, recorder.ingest, recorder.reject)
    finally:
        await agent.close()

    assert source.restarts_seen == 1
    assert source.instance_id == str(agent.instance_id) != old_instance
    assert source.next_sequence == 51
    assert f"restarted (instanceId {agent.instance_id}" in caplog.text
    assert agent.requests[-2:] == ["/sample?from=501&count=1000", "/current"]
    assert source.lost_observations == 0


async def test_agent_source_rejects_bad_xml(samples_dir: Path) -> None:
    agent = await _agent(samples_dir)
    recorder = Recorder()
    source = _source(agent)
    broken = b"<MTConnectStreams><Header instanceId='1'"
    try:
        async with aiohttp.ClientSession() as http:
            agent.release(100)
            await source.poll(http, recorder.ingest, recorder.reject)
            agent.release(100)
            agent.broken_answers.append(broken)
            assert await source.poll(http, recorder.ingest, recorder.reject) == 0
            assert await source.poll(http, recorder.ingest, recorder.reject) == 100
    finally:
        await agent.close()

    [letter] = recorder.dead_letters
    assert letter.payload == broken
    assert letter.stage == "ingest"
    assert letter.content_type == "application/xml"
    assert letter.details["next_sequence"] == 101
    assert "not well-formed XML" in letter.error
    assert source.next_sequence == 201


async def test_agent_source_retries_until_agent_is_up(samples_dir: Path) -> None:
    agent = await _agent(samples_dir)
    port = agent.port
    await agent.close()
    recorder = Recorder()
    source = _source(agent)
    try:
        async with recorder.running(source, stop_timeout=5):
            await asyncio.sleep(0.3)
            assert source.next_sequence is None

            # The agent comes up on the same port with 1,000 observations.
            agent.release(1_000)
            await agent.start(port)
            async with asyncio.timeout(5):
                while source.next_sequence != 1_001:
                    await asyncio.sleep(0.02)
    finally:
        await agent.close()

    # /current contains the latest values only: the execution is ACTIVE by then.
    [state] = [e.data for e in recorder.order if e.type == STATE_CHANGED]
    assert state == {
        "machine_id": "OKUMA",
        "state": "ACTIVE",
        "at": "2022-08-08T13:51:36.7711738Z",
        "program": "IMTS-2022-2-HOB.MIN",
    }


@pytest.mark.parametrize("version", ["1.3", "1.7", "2.2"])
def test_parse_streams_any_version(version: str) -> None:
    ns = f"urn:mtconnect.org:MTConnectStreams:{version}"
    document = f"""<?xml version="1.0"?>
<MTConnectStreams xmlns="{ns}">
  <Header instanceId="7" firstSequence="5" lastSequence="9" nextSequence="10"/>
  <Streams><DeviceStream name="M1" uuid="m1">
    <ComponentStream component="Path" componentId="p1">
      <Events>
        <PartCount dataItemId="pc" sequence="9"
          timestamp="2024-05-01T10:00:02Z">12</PartCount>
        <Execution dataItemId="ex" sequence="6"
          timestamp="2024-05-01T10:00:00Z">ACTIVE</Execution>
      </Events>
      <Condition>
        <Fault dataItemId="sys" type="SYSTEM" sequence="7"
          timestamp="2024-05-01T10:00:01Z">Oil</Fault>
      </Condition>
    </ComponentStream>
  </DeviceStream></Streams>
</MTConnectStreams>""".encode()

    parsed = parse_streams(document)

    assert parsed.header is not None
    assert (parsed.header.instance_id, parsed.header.next_sequence) == ("7", 10)
    assert [(o.sequence, o.type, o.value) for o in parsed.observations] == [
        (6, "EXECUTION", "ACTIVE"),
        (7, "SYSTEM", "FAULT"),
        (9, "PART_COUNT", "12"),
    ]
    assert {o.device for o in parsed.observations} == {"M1"}


def test_parse_streams_rejects_other_documents() -> None:
    with pytest.raises(StreamsError, match="'MTConnectDevices' document"):
        parse_streams(
            b"<MTConnectDevices xmlns='urn:mtconnect.org:MTConnectDevices:2.0'/>"
        )
