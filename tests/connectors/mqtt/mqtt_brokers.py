"""Mosquitto brokers for the MQTT tests, and a recorder for ingest and reject."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiomqtt

from plantbus.backbone.log import Appended
from plantbus.backbone.sqlite import SqliteLog
from plantbus.config.model import MqttBrokerConfig
from plantbus.events.catalogue import Catalogue
from plantbus.events.envelope import Event
from plantbus.ingest import Ingestor
from plantbus.state.dead_letters import DeadLetter

# Run a source in the background for the length of an `async with` block.
RunSource = Callable[..., contextlib.AbstractAsyncContextManager[Any]]
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
CATALOGUE = Catalogue.load()


def port_accepts_connections(port: int, host: str = "127.0.0.1") -> bool:
    """Return True when something accepts TCP connections on the port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), 0.5):
        return True
    return False


def free_port() -> int:
    """Return a loopback port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def unique_topic(prefix: str = "plantbus-test") -> str:
    """Return a topic prefix that no other test uses."""
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


class PrivateBroker:
    """A mosquitto process on its own loopback port, with persistence in a folder."""

    def __init__(self, folder: Path, extra: str = "", *, tls: bool = False) -> None:
        self.folder = folder
        self.port = free_port()
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None
        self.config = folder / "mosquitto.conf"
        # Started as root, mosquitto switches to its own user, which could not
        # write the persistence file into this folder; stay the current user.
        self.config.write_text(
            f"user {getpass.getuser()}\n"
            f"listener {self.port} 127.0.0.1\n"
            f"persistence true\n"
            f"persistence_location {folder}/\n"
            f"log_dest file {folder}/mosquitto.log\n"
            f"{extra}\n"
        )

    def start(self) -> None:
        """Start mosquitto and wait until it accepts connections."""
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not port_accepts_connections(self.port):
            if self.process.poll() is not None:
                log = (self.folder / "mosquitto.log").read_text(errors="replace")
                raise RuntimeError(f"mosquitto exited at start:\n{log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not listen on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop mosquitto with SIGTERM, which saves its persistence file."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def settings(self, **options: object) -> MqttBrokerConfig:
        """Return broker settings for this broker with fast reconnects."""
        return broker_settings(self.port, **options)


def private_broker(tmp_path: Path, extra: str) -> Iterator[PrivateBroker]:
    """Run a PrivateBroker in tmp_path/mosquitto; fixtures `yield from` this."""
    folder = tmp_path / "mosquitto"
    folder.mkdir()
    broker = PrivateBroker(folder, extra)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def broker_settings(port: int = 1883, **options: object) -> MqttBrokerConfig:
    """Return settings for a loopback broker with short reconnect waits."""
    base: dict[str, object] = {
        "port": port,
        "reconnect_initial_seconds": 0.1,
        "reconnect_max_seconds": 0.5,
        "timeout_seconds": 5,
    }
    return MqttBrokerConfig.model_validate({**base, **options})


class Recorder:
    """Ingest into a real SQLite log and keep what was appended and rejected."""

    def __init__(self, log: SqliteLog) -> None:
        self.ingestor = Ingestor(log, CATALOGUE)
        self.events: list[Event] = []
        self.dead_letters: list[DeadLetter] = []
        self.changed = asyncio.Event()

    async def ingest(self, events: Sequence[Event]) -> list[Appended]:
        appended = await self.ingestor(events)
        self.events.extend(
            event
            for event, result in zip(events, appended, strict=True)
            if not result.duplicate
        )
        self.changed.set()
        return appended

    async def reject(self, letter: DeadLetter) -> None:
        self.dead_letters.append(letter)
        self.changed.set()

    async def wait_for(
        self, events: int = 0, letters: int = 0, timeout: float = 10
    ) -> None:
        """Wait until at least this many events and dead letters came in."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.events) < events or len(self.dead_letters) < letters:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(
                    f"expected {events} events and {letters} dead letters, got "
                    f"{len(self.events)} and {len(self.dead_letters)}"
                )
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 0.2))


async def publish(
    port: int,
    messages: Sequence[tuple[str, bytes]],
    *,
    qos: int = 1,
    protocol: str = "5",
    **client_options: object,
) -> None:
    """Publish messages with a fresh client and wait for the broker's acks."""
    version = (
        aiomqtt.ProtocolVersion.V5 if protocol == "5" else aiomqtt.ProtocolVersion.V311
    )
    async with aiomqtt.Client(
        "127.0.0.1",
        port,
        protocol=version,
        **client_options,  # type: ignore[arg-type]
    ) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=qos)
