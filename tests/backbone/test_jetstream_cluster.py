"""JetStreamLog on a three-node cluster that loses its stream leader mid-append.

The test starts three private nats-server processes from the virtual
environment on loopback ports, with replicas 3. Set PLANTBUS_SOAK_EVENTS for a
longer run than the default 3,000 events.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from plantbus.backbone.jetstream import JetStreamLog
from plantbus.backbone.log import Appended
from plantbus.errors import BackboneError

from .contract import make_event
from .nats_servers import Cluster, Node

EVENTS = int(os.environ.get("PLANTBUS_SOAK_EVENTS", "3000"))
BATCH = 100


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Start a three-node JetStream cluster; stop every node afterwards."""
    servers = Cluster.create(tmp_path)
    servers.start()
    yield servers
    servers.stop()


async def _start_when_ready(log: JetStreamLog, seconds: float) -> None:
    # A fresh cluster elects its meta leader a moment after the ports open.
    deadline = time.monotonic() + seconds
    while True:
        try:
            await log.start()
            return
        except BackboneError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.25)


async def _stream_leader(cluster: Cluster, stream: str) -> Node:
    nc = await nats.connect(cluster.url.split(","))
    info = await nc.jetstream().stream_info(stream)
    await nc.close()
    assert info.cluster is not None
    return next(node for node in cluster.nodes if node.name == info.cluster.leader)


async def _replicas_current(cluster: Cluster, stream: str, seconds: float) -> bool:
    # The restarted node is current once it has caught up with the leader.
    nc = await nats.connect(cluster.url.split(","))
    deadline = time.monotonic() + seconds
    current = False
    while not current and time.monotonic() < deadline:
        info = await nc.jetstream().stream_info(stream)
        replicas = (info.cluster.replicas or []) if info.cluster else []
        current = len(replicas) == 2 and all(peer.current for peer in replicas)
        if not current:
            await asyncio.sleep(0.2)
    await nc.close()
    return current


async def test_jetstream_cluster_leader_killed_loses_nothing(
    cluster: Cluster,
) -> None:
    stream = f"pbsoak-{uuid.uuid4().hex[:8]}"
    log = JetStreamLog(cluster.url, stream, partitions=8, replicas=3, timeout=2.0)
    await _start_when_ready(log, 20.0)
    events = [make_event(f"WO-{i % 50}", i) for i in range(EVENTS)]
    leader = await _stream_leader(cluster, stream)

    appended: list[Appended] = []
    for start in range(0, EVENTS, BATCH):
        if start == EVENTS // 3:
            # Mid-stream, and with the next batch already on its way.
            next_batch = asyncio.create_task(log.append(events[start : start + BATCH]))
            await asyncio.sleep(0.01)
            leader.kill()
            appended.extend(await next_batch)
            continue
        appended.extend(await log.append(events[start : start + BATCH]))

    group = "soak"
    seen: list[str] = []
    positions = await log.committed(group)
    while records := await log.consume(group, positions, 500):
        seen.extend(r.event.id for r in records)
        for record in records:
            positions[record.partition] = record.offset
        await log.commit(group, positions)
    lag = await log.lag(group)
    nc = await nats.connect(cluster.url.split(","))
    stored = (await nc.jetstream().stream_info(stream)).state.messages
    await nc.close()

    leader.start()
    [after_restart] = await log.append([make_event("WO-after")])
    tail = await log.read(await log.committed(group), 10)
    caught_up = await _replicas_current(cluster, stream, 15.0)
    await log.close()

    assert len(appended) == EVENTS
    assert len(seen) == EVENTS
    assert set(seen) == {e.id for e in events}
    assert stored == EVENTS
    assert lag == 0
    assert [r.offset for r in tail] == [after_restart.offset]
    assert caught_up
