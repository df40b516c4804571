"""Fixtures for the MQTT tests: the machine's Mosquitto, a log, running sources."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mqtt_brokers import MOSQUITTO, Recorder, RunSource, port_accepts_connections

from plantbus.backbone.sqlite import SqliteLog
from plantbus.connectors.mqtt.source import MqttSource


@pytest.fixture(scope="session")
def main_broker() -> int:
    """Return the port of the machine's Mosquitto, starting it when it is down."""
    if not port_accepts_connections(1883):
        subprocess.run(
            [MOSQUITTO, "-d", "-c", "/etc/mosquitto/mosquitto.conf"], check=True
        )
        for _ in range(100):
            if port_accepts_connections(1883):
                break
            subprocess.run(["sleep", "0.05"], check=True)
    if not port_accepts_connections(1883):
        pytest.fail("Mosquitto accepts no connections on 127.0.0.1:1883.")
    return 1883


@pytest.fixture
async def recorder(tmp_path: Path) -> AsyncIterator[Recorder]:
    """Return a recorder in front of a fresh SQLite log."""
    log = SqliteLog(tmp_path / "log.sqlite", partitions=4)
    await log.start()
    yield Recorder(log)
    await log.close()


@pytest.fixture
def run_source(recorder: Recorder) -> RunSource:
    """Return a context manager that runs a source until the block ends."""

    @contextlib.asynccontextmanager
    async def running(
        source: MqttSource, *, wait: bool = True
    ) -> AsyncIterator[asyncio.Task[None]]:
        stop = asyncio.Event()
        task = asyncio.create_task(source.run(recorder.ingest, recorder.reject, stop))
        try:
            if wait:
                await asyncio.wait_for(source.subscribed.wait(), 10)
            yield task
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)

    return running
