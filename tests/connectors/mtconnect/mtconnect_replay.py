"""Test helpers: replay an SHDR log over TCP, and serve it as an MTConnect agent."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web
from lxml import etree

from plantbus.connectors.mtconnect.devices import DataItem, read_devices, select_device
from plantbus.connectors.mtconnect.mapping import (
    PARTS_COUNTED,
    STATE_CHANGED,
    Observation,
)
from plantbus.connectors.mtconnect.shdr import ShdrParser
from plantbus.events.envelope import Event


def state_changes(
    events: Sequence[Event],
) -> list[tuple[str, str, str | None, str | None]]:
    """Return (at, state, previous state, program) of each state change event."""
    return [
        (
            e.data["at"],
            e.data["state"],
            e.data.get("previous_state"),
            e.data.get("program"),
        )
        for e in events
        if e.type == STATE_CHANGED
    ]


def part_counts(events: Sequence[Event]) -> list[tuple[str, int, int | None]]:
    """Return (at, count, delta) of each parts counted event."""
    return [
        (e.data["at"], e.data["count"], e.data.get("delta"))
        for e in events
        if e.type == PARTS_COUNTED
    ]


def okuma_items(samples: Path) -> dict[str, DataItem]:
    path = samples / "mes" / "mtconnect_cppagent" / "Devices.xml"
    return select_device(read_devices(path), "OKUMA", path)


def okuma_lines(samples: Path) -> list[bytes]:
    """Return the lines of okuma.txt, each with its newline."""
    data = (samples / "mes" / "mtconnect_cppagent" / "okuma.txt").read_bytes()
    return [line + b"\n" for line in data.split(b"\n") if line]


class ShdrAdapter:
    """A TCP server that plays SHDR lines to each client, like an adapter.

    Each connection gets the lines from where the last one stopped. A
    connection ends after `close_after` lines when that is set. `* PING`
    gets `* PONG <pong_ms>`, unless `pong_ms` is None.
    """

    def __init__(
        self,
        lines: list[bytes],
        *,
        close_after: int | None = None,
        pong_ms: int | None = 10_000,
        silent_after: int | None = None,
    ) -> None:
        self.lines = lines
        self.close_after = close_after
        self.pong_ms = pong_ms
        self.silent_after = silent_after
        self.position = 0
        # True while the adapter hangs: it sends nothing, not even PONG.
        self.mute = False
        self.connections = 0
        self.pings = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        self.mute = False
        pongs = asyncio.create_task(self._answer_pings(reader, writer))
        self._tasks.add(pongs)
        try:
            limit = self.close_after if self.connections == 1 else None
            end = len(self.lines) if limit is None else limit
            if self.connections == 1 and self.silent_after is not None:
                end = self.silent_after
            while self.position < end:
                writer.write(self.lines[self.position])
                self.position += 1
                if self.position % 200 == 0:
                    await writer.drain()
            await writer.drain()
            if self.connections == 1 and self.silent_after is not None:
                self.mute = True
            if limit is not None:
                # Half-close and wait for the client to hang up, so that no
                # unread data turns the close into a reset that drops lines.
                writer.write_eof()
                await asyncio.wait_for(pongs, timeout=5)
                return
            # Stay connected (and silent) like an idle adapter.
            await asyncio.sleep(3600)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            pongs.cancel()
            writer.close()

    async def _answer_pings(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while line := await reader.readline():
                if line.strip() == b"* PING":
                    self.pings += 1
                    # A hanging adapter still responded to the first PING.
                    first = self.pings == 1
                    if self.pong_ms is not None and (first or not self.mute):
                        writer.write(f"* PONG {self.pong_ms}\n".encode())


def okuma_observations(samples: Path) -> list[Observation]:
    """Return the observations of okuma.txt that a real agent would store."""
    parser = ShdrParser("OKUMA", okuma_items(samples))
    found = []
    for line in okuma_lines(samples):
        for observation in parser.feed(line.decode()):
            # An agent drops values of data items that its devices file lacks.
            if observation.type is not None:
                found.append(observation)
    return found


def _element_name(kind: str) -> str:
    return "".join(part.capitalize() for part in kind.split("_"))


class ReplayAgent:
    """An MTConnect agent over HTTP whose buffer the test fills step by step.

    It numbers released observations from 1, keeps the last `buffer_size` of
    them and honours `from` and `count` of `/sample` as cppagent does: a
    `from` outside the buffer gets an MTConnectError OUT_OF_RANGE.
    """

    def __init__(
        self,
        observations: list[Observation],
        items: dict[str, DataItem],
        *,
        buffer_size: int = 131_072,
        version: str = "2.0",
    ) -> None:
        self.pending = list(observations)
        self.items = items
        self.buffer_size = buffer_size
        self.namespace = f"urn:mtconnect.org:MTConnectStreams:{version}"
        self.error_namespace = f"urn:mtconnect.org:MTConnectError:{version}"
        self.instance_id = 1_660_000_000
        self.buffer: list[Observation] = []
        # Sequence number of each released observation, by object identity
        # because repeated values are distinct observations.
        self.sequence_of: dict[int, int] = {}
        self.current: dict[str, Observation] = {}
        self.requests: list[str] = []
        # (from, nextSequence) of every /sample response with observations.
        self.pages: list[tuple[int, int]] = []
        # Bodies sent instead of the next /sample response, to test broken ones.
        self.broken_answers: list[bytes] = []
        # Whether MTConnectError documents carry a Header with sequence numbers.
        self.error_header = True
        self.url = ""
        self.port = 0
        self._runner: web.AppRunner | None = None

    def release(self, count: int) -> None:
        """Let the agent receive the next `count` observations."""
        released, self.pending = self.pending[:count], self.pending[count:]
        self.buffer.extend(released)
        for observation in released:
            self.current[observation.key] = observation
            self.sequence_of[id(observation)] = len(self.sequence_of) + 1

    def restart(self) -> None:
        """Restart the agent: new instance id, empty buffer, sequences from 1."""
        self.instance_id += 1
        self.buffer = []
        self.current = {}
        self.sequence_of = {}

    @property
    def last_sequence(self) -> int:
        return len(self.buffer)

    @property
    def first_sequence(self) -> int:
        return max(1, len(self.buffer) - self.buffer_size + 1)

    async def start(self, port: int = 0) -> None:
        """Serve on `port` of 127.0.0.1; 0 lets the system pick a free one."""
        app = web.Application()
        app.router.add_get("/current", self._current)
        app.router.add_get("/sample", self._sample)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _current(self, request: web.Request) -> web.Response:
        self.requests.append(request.path_qs)
        latest = sorted(self.current.values(), key=lambda o: self.sequence_of[id(o)])
        return self._streams(latest, self.last_sequence + 1)

    async def _sample(self, request: web.Request) -> web.Response:
        self.requests.append(request.path_qs)
        if self.broken_answers:
            return web.Response(
                body=self.broken_answers.pop(0), content_type="application/xml"
            )
        start = int(request.query.get("from", self.first_sequence))
        count = int(request.query.get("count", 100))
        if start < self.first_sequence or start > self.last_sequence + 1:
            return self._error(
                "OUT_OF_RANGE",
                f"'from' must be between {self.first_sequence} and "
                f"{self.last_sequence + 1}.",
            )
        end = min(start + count - 1, self.last_sequence)
        chosen = self.buffer[start - 1 : end]
        self.pages.append((start, end + 1))
        return self._streams(chosen, end + 1)

    def _header(self, parent: etree._Element, next_sequence: int) -> None:
        etree.SubElement(
            parent,
            f"{{{parent.nsmap[None]}}}Header",
            creationTime=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            sender="replay",
            instanceId=str(self.instance_id),
            version="2.0.0.0",
            bufferSize=str(self.buffer_size),
            firstSequence=str(self.first_sequence),
            lastSequence=str(self.last_sequence),
            nextSequence=str(next_sequence),
        )

    def _streams(self, chosen: list[Observation], next_sequence: int) -> web.Response:
        ns = self.namespace
        root = etree.Element(f"{{{ns}}}MTConnectStreams", nsmap={None: ns})
        self._header(root, next_sequence)
        streams = etree.SubElement(root, f"{{{ns}}}Streams")
        device = etree.SubElement(
            streams, f"{{{ns}}}DeviceStream", name="OKUMA", uuid="OKUMA.123456"
        )
        component = etree.SubElement(
            device,
            f"{{{ns}}}ComponentStream",
            component="Device",
            componentId="OKUMA.123456",
        )
        groups: dict[str, etree._Element] = {}
        for observation in chosen:
            item = self.items[observation.key]
            group_name = {
                "SAMPLE": "Samples",
                "EVENT": "Events",
                "CONDITION": "Condition",
            }[item.category]
            if group_name not in groups:
                groups[group_name] = etree.SubElement(
                    component, f"{{{ns}}}{group_name}"
                )
            if item.category == "CONDITION":
                tag = observation.value.capitalize()
            else:
                tag = _element_name(item.type)
            element = etree.SubElement(
                groups[group_name],
                f"{{{ns}}}{tag}",
                dataItemId=item.id,
                timestamp=observation.timestamp,
                sequence=str(self.sequence_of[id(observation)]),
            )
            if item.name:
                element.set("name", item.name)
            if item.sub_type:
                element.set("subType", item.sub_type)
            if item.category == "CONDITION":
                element.set("type", item.type)
            else:
                element.text = observation.value
        body = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
        return web.Response(body=body, content_type="application/xml")

    def _error(self, code: str, text: str) -> web.Response:
        ns = self.error_namespace
        root = etree.Element(f"{{{ns}}}MTConnectError", nsmap={None: ns})
        if self.error_header:
            self._header(root, self.last_sequence + 1)
        errors = etree.SubElement(root, f"{{{ns}}}Errors")
        error = etree.SubElement(errors, f"{{{ns}}}Error", errorCode=code)
        error.text = text
        body = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
        return web.Response(status=400, body=body, content_type="application/xml")


def sequence_ranges(requests: list[str]) -> list[int]:
    """Return the `from` values of the /sample requests, in order."""
    return [int(m.group(1)) for r in requests if (m := re.search(r"from=(\d+)", r))]
