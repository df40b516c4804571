"""Poll an MTConnect agent over HTTP and ingest the events its observations map to.

The source reads `/current` once to learn the agent's instance id and the
next sequence number. Then it requests `/sample?from=<next>&count=<count>` in
a loop and continues from the `nextSequence` of each response, so every
observation is read once.

- When the agent restarted, seen as a new `instanceId`, sequence numbers
  start over: the source reads `/current` again and goes on from there.
- When the agent's `firstSequence` is past the next expected number, the
  observations in between left the agent's buffer before plantbus read them.
  The source logs how many were lost, counts them in
  `plantbus_mtconnect_lost_observations_total` and reads on from
  `firstSequence`. An OUT_OF_RANGE error without sequence numbers makes it
  read `/current` first to learn `firstSequence`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

import aiohttp
from prometheus_client import Counter

from plantbus.connectors.base import Ingest, Reject, Source
from plantbus.connectors.mtconnect.mapping import MachineMapper, Observation
from plantbus.connectors.mtconnect.streams import (
    Header,
    StreamsDocument,
    StreamsError,
    parse_streams,
)
from plantbus.errors import EventError
from plantbus.state.dead_letters import DeadLetter

logger = logging.getLogger("plantbus.connectors.mtconnect")

LOST_OBSERVATIONS = Counter(
    "plantbus_mtconnect_lost_observations_total",
    "Observations that left an MTConnect agent's buffer before plantbus read them.",
    ["source"],
)


class AgentUnavailable(Exception):
    """The agent could not be reached or responded with an HTTP error."""


class _Resync(Exception):
    """The source must read `/current` again (agent restart or lost data)."""


class AgentSource(Source):
    """Follow an MTConnect agent's sequence numbers and ingest mapped events."""

    def __init__(
        self,
        name: str,
        url: str,
        mapper: MachineMapper,
        *,
        device: str | None = None,
        count: int = 1000,
        poll_interval: float = 1.0,
        timeout: float = 30.0,
        reconnect_initial: float = 0.5,
        reconnect_max: float = 30.0,
    ) -> None:
        if count < 1:
            raise ValueError(f"count is {count!r}; expected 1 or more observations.")
        self.name = name
        # Base URL, or the device's URL such as http://agent:5000/OKUMA.
        self.url = url.rstrip("/") + (f"/{device}" if device else "")
        self.mapper = mapper
        self.count = count
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.reconnect_initial = reconnect_initial
        self.reconnect_max = reconnect_max
        self.instance_id: str | None = None
        self.next_sequence: int | None = None
        # Counts since start, for tests and the report.
        self.lost_observations = 0
        self.restarts_seen = 0
        self.rejected = 0

    async def run(self, ingest: Ingest, reject: Reject, stop: asyncio.Event) -> None:
        """Poll the agent until `stop` is set, backing off after failures."""
        logger.info("Polling MTConnect agent %s for source %r.", self.url, self.name)
        delay = self.reconnect_initial
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while not stop.is_set():
                try:
                    read = await self.poll(http, ingest, reject)
                except AgentUnavailable as exc:
                    logger.warning(
                        "%s. Source %r retries in %.1fs.", exc, self.name, delay
                    )
                    await _sleep(stop, delay * random.uniform(0.8, 1.0))
                    delay = min(delay * 2, self.reconnect_max)
                    continue
                delay = self.reconnect_initial
                # A full page means more is waiting: ask again at once.
                if read is not None and read < self.count:
                    await _sleep(stop, self.poll_interval)
        logger.info("Stopped polling MTConnect agent %s for %r.", self.url, self.name)

    async def poll(
        self, http: aiohttp.ClientSession, ingest: Ingest, reject: Reject
    ) -> int | None:
        """Read the next page of observations, or `/current` first, and return how many.

        Returns None when the source skipped a gap and should read on at once.
        """
        if self.next_sequence is None:
            return await self._current(http, ingest, reject)
        query = f"from={self.next_sequence}&count={self.count}"
        try:
            read = await self._sample(http, query, ingest, reject)
        except _Resync:
            return await self._current(http, ingest, reject)
        return read

    async def _current(
        self, http: aiohttp.ClientSession, ingest: Ingest, reject: Reject
    ) -> int | None:
        body = await self._get(http, "/current")
        document = await self._parse(body, "/current", reject)
        if document is None:
            return 0
        if document.errors or document.header is None:
            raise AgentUnavailable(
                f"MTConnect agent {self.url} responded to /current with errors "
                f"{document.errors!r}"
            )

        header = document.header
        same_instance = header.instance_id == self.instance_id
        if same_instance and self.next_sequence is not None:
            # A resync after OUT_OF_RANGE: read on from the oldest buffered
            # observation rather than jump to the current values.
            if self._skip_gap(header):
                return None
        elif self.instance_id is not None:
            self.restarts_seen += 1
            logger.warning(
                "MTConnect agent %s restarted (instanceId %s, was %s). Source %r "
                "continues from its current values.",
                self.url,
                header.instance_id,
                self.instance_id,
                self.name,
            )

        self.instance_id = header.instance_id
        await self._ingest(document.observations, body, ingest, reject)
        self.next_sequence = header.next_sequence
        return len(document.observations)

    async def _sample(
        self, http: aiohttp.ClientSession, query: str, ingest: Ingest, reject: Reject
    ) -> int | None:
        path = f"/sample?{query}"
        body = await self._get(http, path)
        document = await self._parse(body, path, reject)
        if document is None:
            # NOTE: an agent that keeps sending broken XML for this page gives
            # one dead letter per poll. A broken response has no nextSequence,
            # so the source cannot skip the page.
            return 0
        header = document.header
        if header is not None and header.instance_id != self.instance_id:
            raise _Resync
        if header is not None and self._skip_gap(header):
            # Read on at once from the oldest observation the agent still has.
            return None
        if any(code == "OUT_OF_RANGE" for code, _ in document.errors):
            raise _Resync
        if document.errors or header is None:
            raise AgentUnavailable(
                f"MTConnect agent {self.url} responded to {path} with errors "
                f"{document.errors!r}"
            )
        await self._ingest(document.observations, body, ingest, reject)
        self.next_sequence = header.next_sequence
        return len(document.observations)

    def _skip_gap(self, header: Header) -> bool:
        """Skip observations that left the agent's buffer and return whether any did."""
        assert self.next_sequence is not None
        if header.first_sequence <= self.next_sequence:
            return False
        self._lose(self.next_sequence, header.first_sequence)
        self.next_sequence = header.first_sequence
        return True

    def _lose(self, expected: int, first: int) -> None:
        lost = first - expected
        self.lost_observations += lost
        LOST_OBSERVATIONS.labels(self.name).inc(lost)
        logger.error(
            "Lost %d observations from MTConnect agent %s for source %r: sequence "
            "%d to %d left the agent's buffer before they were read. Poll more "
            "often, raise `count`, or enlarge the agent's buffer.",
            lost,
            self.url,
            self.name,
            expected,
            first - 1,
        )

    async def _get(self, http: aiohttp.ClientSession, path: str) -> bytes:
        url = self.url + path
        try:
            async with http.get(url) as response:
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AgentUnavailable(
                f"Failed to reach MTConnect agent {url}: {exc or type(exc).__name__}"
            ) from exc
        # The agent reports errors such as OUT_OF_RANGE in an MTConnectError
        # document with a 4xx status, so those bodies are read too.
        if response.status >= 500 or response.status in (401, 403, 404):
            raise AgentUnavailable(
                f"MTConnect agent {url} responded with HTTP {response.status}"
            )
        return body

    async def _parse(
        self, body: bytes, path: str, reject: Reject
    ) -> StreamsDocument | None:
        try:
            return parse_streams(body)
        except StreamsError as exc:
            await self._reject(body, f"{path}: {exc}", reject)
            return None

    async def _ingest(
        self,
        observations: list[Observation],
        body: bytes,
        ingest: Ingest,
        reject: Reject,
    ) -> None:
        events = [e for o in observations for e in self.mapper.map(o)]
        if not events:
            return
        try:
            await ingest(events)
        except EventError as exc:
            await self._reject(body, str(exc), reject)

    async def _reject(self, body: bytes, message: str, reject: Reject) -> None:
        self.rejected += 1
        await reject(
            DeadLetter(
                stage="ingest",
                error=message,
                payload=body,
                source=self.name,
                content_type="application/xml",
                details={"agent": self.url, "next_sequence": self.next_sequence},
            )
        )
        logger.warning(
            "Rejected a response of MTConnect agent %s for source %r: %s",
            self.url,
            self.name,
            message,
        )


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
