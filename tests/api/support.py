"""Helpers for the API tests: the event log and ingest they run on, request bodies."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import orjson

from plantbus.backbone.log import Appended, Record, partition_for
from plantbus.connectors.base import Ingest
from plantbus.errors import BatchRejected, EventError
from plantbus.events.catalogue import Catalogue
from plantbus.events.envelope import Event

try:
    from plantbus.backbone.sqlite import SqliteLog
except ImportError:  # the SQLite backend may not be written yet
    SqliteLog = None  # type: ignore[assignment,misc]

try:
    from plantbus.ingest import Ingestor
except ImportError:
    Ingestor = None  # type: ignore[assignment,misc]

PARTITIONS = 16


def samples_root() -> Path:
    """Return the samples folder: $PLANTBUS_SAMPLES, else ../shared/samples."""
    configured = os.environ.get("PLANTBUS_SAMPLES")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / ".." / "shared" / "samples"


LOG_KIND = "SqliteLog" if SqliteLog is not None else "in-memory fake log"
INGEST_KIND = "plantbus.ingest.Ingestor" if Ingestor is not None else "test ingest"


class ReadableLog(Protocol):
    async def append(self, events: Sequence[Event]) -> list[Appended]: ...

    async def read(self, positions: Mapping[int, int], limit: int) -> list[Record]: ...


class MemoryLog:
    """A dict-backed stand-in for SqliteLog while that backend is not importable."""

    def __init__(self, partitions: int = PARTITIONS) -> None:
        self.partitions = partitions
        self.records: list[Record] = []
        self.by_id: dict[str, Appended] = {}

    async def append(self, events: Sequence[Event]) -> list[Appended]:
        results = []
        for event in events:
            earlier = self.by_id.get(event.id)
            if earlier is not None:
                results.append(
                    Appended(event.id, earlier.offset, earlier.partition, True)
                )
                continue
            offset = len(self.records) + 1
            partition = partition_for(event.key, self.partitions)
            self.records.append(Record(offset, partition, event.to_json(), 0.0))
            self.by_id[event.id] = Appended(event.id, offset, partition, False)
            results.append(self.by_id[event.id])
        return results

    async def read(self, positions: Mapping[int, int], limit: int) -> list[Record]:
        found = [
            record
            for record in self.records
            if record.partition in positions
            and record.offset > positions[record.partition]
        ]
        return found[:limit]


def build_ingest(
    log: ReadableLog, catalogue: Catalogue, allow_unknown_types: bool
) -> Ingest:
    """Return the Ingestor over `log`, or an equivalent while it is not importable."""
    if Ingestor is not None:
        return Ingestor(log, catalogue, allow_unknown_types=allow_unknown_types)  # type: ignore[arg-type]

    async def ingest(events: Sequence[Event]) -> list[Appended]:
        errors: list[tuple[int, EventError]] = []
        for index, event in enumerate(events):
            try:
                catalogue.validate(event, allow_unknown=allow_unknown_types)
            except EventError as exc:
                errors.append((index, exc))
        if errors:
            raise BatchRejected(errors)
        return await log.append(events)

    return ingest


@contextlib.asynccontextmanager
async def open_event_log(folder: Path) -> AsyncIterator[ReadableLog]:
    """Open a SqliteLog in `folder`, or a MemoryLog while SqliteLog is missing."""
    if SqliteLog is None:
        yield MemoryLog()
        return
    log = SqliteLog(folder / "log.db", partitions=PARTITIONS)
    await log.start()
    try:
        yield log
    finally:
        await log.close()


async def read_all(log: ReadableLog) -> list[Record]:
    """Return every record in the log, in offset order."""
    return await log.read({partition: 0 for partition in range(PARTITIONS)}, 10_000)


def structured(document: Any) -> dict[str, Any]:
    """Return httpx request arguments for one event in structured mode."""
    return {
        "content": orjson.dumps(document),
        "headers": {"content-type": "application/cloudevents+json"},
    }


def batched(documents: Any) -> dict[str, Any]:
    """Return httpx request arguments for a batch of events."""
    return {
        "content": orjson.dumps(documents),
        "headers": {"content-type": "application/cloudevents-batch+json"},
    }
