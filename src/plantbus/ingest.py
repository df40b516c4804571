"""Ingest: check events against the envelope rules and the catalogue, then append."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

from plantbus.backbone.log import Appended, EventLog
from plantbus.errors import BackboneError, BatchRejected, EventError, Violation
from plantbus.events.catalogue import Catalogue
from plantbus.events.envelope import Event
from plantbus.observability.metrics import EVENTS_INGESTED

logger = logging.getLogger("plantbus.ingest")


class Ingestor:
    """Validate events and append them durably; the `Ingest` callable of sources."""

    def __init__(
        self, log: EventLog, catalogue: Catalogue, *, allow_unknown_types: bool = False
    ) -> None:
        self.log = log
        self.catalogue = catalogue
        self.allow_unknown_types = allow_unknown_types

    async def __call__(self, events: Sequence[Event]) -> list[Appended]:
        """Validate every event, then append all of them or none.

        Raises EventError for a single bad event and BatchRejected listing each
        bad event of a larger batch.
        """
        errors: list[tuple[int, EventError]] = []
        for index, event in enumerate(events):
            try:
                self.catalogue.validate(event, allow_unknown=self.allow_unknown_types)
            except EventError as exc:
                errors.append((index, exc))
        _raise_errors(errors, len(events))

        try:
            appended = await self.log.append(events)
        except BackboneError as exc:
            # The log raises from TypeError for data it cannot serialise, such
            # as JSON nested deeper than orjson writes: a fault of the events,
            # which must not look like a failure of the log.
            if not isinstance(exc.__cause__, TypeError):
                raise
            _reject_unserialisable(events)
            raise
        counts = Counter(
            event.type
            for event, result in zip(events, appended, strict=True)
            if not result.duplicate
        )
        for event_type, count in counts.items():
            EVENTS_INGESTED.labels(event_type).inc(count)
        return appended


def _reject_unserialisable(events: Sequence[Event]) -> None:
    """Raise EventError or BatchRejected for the events that are not JSON."""
    errors: list[tuple[int, EventError]] = []
    for index, event in enumerate(events):
        try:
            event.to_json()
        except TypeError as exc:
            rule = (
                "the event cannot be written as JSON: its data nests too deep "
                "(orjson writes at most 254 levels, the envelope included) or "
                "contains a value that is not JSON"
            )
            violation = Violation("data", str(exc), rule)
            errors.append((index, EventError(event.id, [violation])))
    _raise_errors(errors, len(events))


def _raise_errors(errors: list[tuple[int, EventError]], batch_size: int) -> None:
    """Raise the EventError of a single event or BatchRejected for a batch."""
    if not errors:
        return
    if batch_size == 1:
        raise errors[0][1]
    raise BatchRejected(errors)


class BacklogGate:
    """Hold back sources that can wait while the pipelines are far behind.

    A folder or a polled system loses nothing by waiting: the files stay in
    the inbox and the rows stay in the database. So before such a source
    appends, the gate waits until the slowest pipeline has no more than
    `limit` events left to deliver. The backlog then stays in the place it
    came from instead of growing the log without bound.
    """

    def __init__(
        self,
        measure: Callable[[], Awaitable[int]],
        limit: int,
        stop: asyncio.Event,
        *,
        poll_seconds: float = 0.5,
    ) -> None:
        self.measure = measure
        self.limit = limit
        self.stop = stop
        self.poll_seconds = poll_seconds
        self.pauses = 0

    def wrap(
        self, ingest: Callable[[Sequence[Event]], Awaitable[list[Appended]]], name: str
    ) -> Callable[[Sequence[Event]], Awaitable[list[Appended]]]:
        """Return an ingest callable for source `name` that waits for room first."""

        async def ingest_when_room(events: Sequence[Event]) -> list[Appended]:
            await self.wait_for_room(name)
            return await ingest(events)

        return ingest_when_room

    async def wait_for_room(self, name: str) -> None:
        """Return once the backlog is under the limit or the hub stops."""
        backlog = await self.measure()
        if backlog <= self.limit:
            return

        self.pauses += 1
        logger.info(
            "source %s paused: the pipelines have %d events left to deliver, "
            "more than the limit of %d",
            name,
            backlog,
            self.limit,
        )
        while backlog > self.limit and not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=self.poll_seconds)
            backlog = await self.measure()
        logger.info("source %s resumed with a backlog of %d events", name, backlog)
