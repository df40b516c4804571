"""Ingest: check events against the envelope rules and the catalogue, then append."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from plantbus.backbone.log import Appended, EventLog
from plantbus.errors import BatchRejected, EventError
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
        if errors:
            if len(events) == 1:
                raise errors[0][1]
            raise BatchRejected(errors)

        appended = await self.log.append(events)
        counts = Counter(
            event.type
            for event, result in zip(events, appended, strict=True)
            if not result.duplicate
        )
        for event_type, count in counts.items():
            EVENTS_INGESTED.labels(event_type).inc(count)
        return appended
