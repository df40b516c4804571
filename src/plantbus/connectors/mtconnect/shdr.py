"""Read an MTConnect adapter's SHDR stream over TCP.

SHDR is line based: `timestamp|item|value|item|value...`. A condition takes
five fields after its name (level, native code, native severity, qualifier,
message), a MESSAGE or ALARM item two or five, a TIME_SERIES item three
(count, rate, values), and every other item one. Which kind an item is comes
from the devices file (Devices.xml) or the source's `data_items` option. Lines
that start with `*` are protocol commands: plantbus sends `* PING` and the
adapter responds with `* PONG <milliseconds>`, which sets the heartbeat. Asset
commands (`@ASSET@` and friends, with `--multiline--` bodies) are skipped.

A line that cannot be read becomes a dead letter with its original bytes and
the stream goes on. When the connection drops, or the adapter stays silent
for twice its heartbeat, the source reconnects with exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from plantbus.connectors.base import Ingest, Reject, Source
from plantbus.connectors.mtconnect.devices import DataItem
from plantbus.connectors.mtconnect.mapping import (
    MachineMapper,
    Observation,
    normalise_timestamp,
)
from plantbus.errors import EventError
from plantbus.events.envelope import utc_now
from plantbus.state.dead_letters import DeadLetter

logger = logging.getLogger("plantbus.connectors.mtconnect")

_MULTILINE = "--multiline--"
# Fields after the item name, by category or type; every other item takes one.
_CONDITION_FIELDS = 5
_FIELDS_BY_TYPE = {"MESSAGE": 2, "ALARM": 5}
_TIME_SERIES_FIELDS = 3
# Maximum length in bytes of a line from an adapter. Longer lines are rejected.
MAX_LINE_BYTES = 1024 * 1024


class ShdrLineError(ValueError):
    """An SHDR line that cannot be read."""


class ShdrParser:
    """Turn SHDR lines of one device into observations, keeping multiline state."""

    def __init__(
        self,
        device: str,
        items: dict[str, DataItem] | None = None,
        *,
        item_types: dict[str, str] | None = None,
    ) -> None:
        self.device = device
        self.items = dict(items or {})
        for key, kind in (item_types or {}).items():
            category = "CONDITION" if kind == "CONDITION" else "EVENT"
            self.items[key] = DataItem(key, key, category, kind, device=device)
        # Milliseconds between heartbeats that the adapter requested in `* PONG`.
        self.heartbeat_ms: int | None = None
        self._multiline_end: str | None = None
        self._unknown: set[str] = set()

    def feed(self, line: str) -> list[Observation]:
        """Read one line and return its observations, or raise ShdrLineError."""
        if self._multiline_end is not None:
            if line.strip() == self._multiline_end:
                self._multiline_end = None
            return []
        text = line.rstrip("\r\n")
        if not text.strip():
            return []
        if text.startswith("*"):
            self._command(text)
            return []

        fields = text.split("|")
        timestamp = self._timestamp(fields[0])
        observations: list[Observation] = []
        index = 1
        while index < len(fields):
            key = fields[index]
            if key.startswith("@") and key.endswith("@") and len(key) > 1:
                # An asset command takes the rest of the line, and a body up
                # to the closing marker when the last field opens one.
                if fields[-1].startswith(_MULTILINE):
                    self._multiline_end = fields[-1].strip()
                break
            observation, index = self._observation(fields, index, timestamp)
            observations.append(observation)
        return observations

    def _timestamp(self, text: str) -> str:
        if not text.strip():
            # An adapter may leave the time to the receiver.
            return utc_now()
        try:
            return normalise_timestamp(text)
        except ValueError:
            raise ShdrLineError(
                f"SHDR timestamp {text!r} is not an RFC 3339 time. Adapters "
                f"must send UTC times such as '2022-08-08T13:51:34.716Z'."
            ) from None

    def _observation(
        self, fields: list[str], index: int, timestamp: str
    ) -> tuple[Observation, int]:
        key = fields[index]
        device, _, name = key.rpartition(":")
        if not name:
            raise ShdrLineError(
                f"SHDR field {index + 1} is an empty data item name. Every "
                f"value must follow the id or name of its data item."
            )

        item = self.items.get(name)
        if item is None and name not in self._unknown:
            self._unknown.add(name)
            logger.warning(
                "SHDR data item %r of device %r is not in the devices file or "
                "`data_items`. Its values are read as plain events and not mapped.",
                name,
                self.device,
            )

        # An item takes the next `width` fields. Only the last item of a line
        # can have fewer, and its missing trailing fields count as empty.
        width = _field_count(item)
        values = fields[index + 1 : index + 1 + width]
        if not values:
            raise ShdrLineError(
                f"SHDR data item {name!r} has no value at the end of the line. "
                f"A line is `timestamp|item|value|item|value...` and a condition "
                f"takes level|native code|severity|qualifier|message."
            )

        value = values[0]
        if item is not None and item.type == "MESSAGE" and len(values) > 1:
            value = values[1]
        observation = Observation(
            timestamp=timestamp,
            device=device or self.device,
            key=name,
            type=item.type if item is not None else None,
            value=value.strip(),
            sub_type=item.sub_type if item is not None else None,
            category=item.category if item is not None else None,
        )
        return observation, index + 1 + width

    def _command(self, text: str) -> None:
        body = text[1:].strip()
        if body.upper().startswith("PONG"):
            parts = body.split()
            if len(parts) > 1 and parts[1].isdigit():
                self.heartbeat_ms = int(parts[1])
            return
        logger.debug("SHDR command from device %r: %s", self.device, body)


def _field_count(item: DataItem | None) -> int:
    if item is None:
        return 1
    if item.category == "CONDITION":
        return _CONDITION_FIELDS
    if item.representation == "TIME_SERIES":
        return _TIME_SERIES_FIELDS
    return _FIELDS_BY_TYPE.get(item.type, 1)


class ShdrSource(Source):
    """Connect to an adapter's SHDR port and ingest the events its lines map to."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        parser: Callable[[], ShdrParser],
        mapper: MachineMapper,
        *,
        connect_timeout: float = 10.0,
        legacy_timeout: float = 600.0,
        reconnect_initial: float = 0.5,
        reconnect_max: float = 30.0,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.new_parser = parser
        self.mapper = mapper
        self.connect_timeout = connect_timeout
        # Seconds of silence after which a connection without heartbeat counts as lost.
        self.legacy_timeout = legacy_timeout
        self.reconnect_initial = reconnect_initial
        self.reconnect_max = reconnect_max
        # Counts since start, for tests and the report.
        self.connections = 0
        self.lines = 0
        self.rejected = 0

    async def run(self, ingest: Ingest, reject: Reject, stop: asyncio.Event) -> None:
        """Read the adapter's stream until `stop` is set, reconnecting on loss."""
        delay = self.reconnect_initial
        logger.info(
            "Reading SHDR from %s:%d for source %r.", self.host, self.port, self.name
        )
        while not stop.is_set():
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port, limit=MAX_LINE_BYTES),
                    timeout=self.connect_timeout,
                )
            except (OSError, TimeoutError) as exc:
                logger.warning(
                    "Failed to connect to the SHDR adapter at %s:%d for source %r: "
                    "%s. Retrying in %.1fs.",
                    self.host,
                    self.port,
                    self.name,
                    exc,
                    delay,
                )
                await _sleep(stop, delay * random.uniform(0.8, 1.0))
                delay = min(delay * 2, self.reconnect_max)
                continue

            self.connections += 1
            delay = self.reconnect_initial
            logger.info(
                "Connected to the SHDR adapter at %s:%d for source %r.",
                self.host,
                self.port,
                self.name,
            )
            try:
                await self._read(reader, writer, ingest, reject, stop)
            except (OSError, TimeoutError) as exc:
                logger.warning(
                    "Lost the SHDR adapter at %s:%d for source %r: %s. Reconnecting.",
                    self.host,
                    self.port,
                    self.name,
                    exc or type(exc).__name__,
                )
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        logger.info("Stopped reading SHDR for source %r.", self.name)

    async def _read(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ingest: Ingest,
        reject: Reject,
        stop: asyncio.Event,
    ) -> None:
        parser = self.new_parser()
        writer.write(b"* PING\n")
        await writer.drain()
        heartbeat = _Heartbeat(writer, parser)
        heartbeat_task = asyncio.create_task(heartbeat.run())
        stopped = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                timeout = (
                    2 * parser.heartbeat_ms / 1000
                    if parser.heartbeat_ms
                    else self.legacy_timeout
                )
                read = asyncio.create_task(_read_line(reader))
                done, _ = await asyncio.wait(
                    {read, stopped}, timeout=timeout, return_when="FIRST_COMPLETED"
                )
                if read not in done:
                    read.cancel()
                    if stop.is_set():
                        return
                    raise TimeoutError(f"no data for {timeout:.1f}s")
                try:
                    raw = read.result()
                except ValueError:
                    # StreamReader dropped a line longer than its limit.
                    await self._reject(
                        b"",
                        f"SHDR line {self.lines + 1} is longer than the maximum "
                        f"of {MAX_LINE_BYTES} bytes and was dropped; send "
                        f"shorter lines.",
                        reject,
                    )
                    self.lines += 1
                    continue
                if raw is None:
                    raise ConnectionError("the adapter closed the connection")
                await self._handle(raw, parser, ingest, reject)
        finally:
            heartbeat_task.cancel()
            stopped.cancel()

    async def _handle(
        self, raw: bytes, parser: ShdrParser, ingest: Ingest, reject: Reject
    ) -> None:
        self.lines += 1
        try:
            observations = parser.feed(raw.decode("utf-8"))
        except (UnicodeDecodeError, ShdrLineError) as exc:
            await self._reject(raw, str(exc), reject)
            return
        events = [e for o in observations for e in self.mapper.map(o)]
        if not events:
            return
        try:
            await ingest(events)
        except EventError as exc:
            await self._reject(raw, str(exc), reject)

    async def _reject(self, raw: bytes, message: str, reject: Reject) -> None:
        self.rejected += 1
        await reject(
            DeadLetter(
                stage="ingest",
                error=message,
                payload=raw,
                source=self.name,
                content_type="text/plain",
                details={"adapter": f"{self.host}:{self.port}", "line": self.lines},
            )
        )
        logger.warning(
            "Rejected SHDR line %d from %s:%d for source %r: %s",
            self.lines,
            self.host,
            self.port,
            self.name,
            message,
        )


class _Heartbeat:
    """Send `* PING` at the interval the adapter gave in its `* PONG`."""

    def __init__(self, writer: asyncio.StreamWriter, parser: ShdrParser) -> None:
        self.writer = writer
        self.parser = parser

    async def run(self) -> None:
        while True:
            interval = (self.parser.heartbeat_ms or 1000) / 1000
            await asyncio.sleep(interval)
            if self.parser.heartbeat_ms is None:
                continue
            self.writer.write(b"* PING\n")
            with contextlib.suppress(OSError):
                await self.writer.drain()


async def _read_line(reader: asyncio.StreamReader) -> bytes | None:
    """Return the next line, or None at the end of the stream."""
    line = await reader.readline()
    return line or None


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
