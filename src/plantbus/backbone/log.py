"""The interface of the event log that every backbone implements.

The log is append-only and split into a fixed number of partitions. An event's
partition follows from its partition key, so the events of one key stay in
append order. Offsets are positions in the whole log: they increase with every
append, and the offsets within one partition increase too, though not by one.
A consumer group keeps one committed offset per partition: the offset of the
last record it has finished with.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from plantbus.events.envelope import Event


def partition_for(key: str, partitions: int) -> int:
    """Return the partition of a partition key; stable across processes and hosts."""
    return zlib.crc32(key.encode("utf-8")) % partitions


@dataclass(frozen=True, slots=True)
class Appended:
    """The outcome of appending one event."""

    event_id: str
    offset: int
    partition: int
    # True when an event with this id was already in the log; `offset` is then
    # the offset of the earlier copy and nothing was written.
    duplicate: bool


class Record:
    """One event as stored in the log, with its offset and partition."""

    __slots__ = ("_event", "appended_at", "body", "offset", "partition")

    def __init__(
        self, offset: int, partition: int, body: bytes, appended_at: float
    ) -> None:
        self.offset = offset
        self.partition = partition
        self.body = body
        # Seconds since the epoch, UTC, when the log accepted the event.
        self.appended_at = appended_at
        self._event: Event | None = None

    @property
    def event(self) -> Event:
        """Return the decoded event; decoding happens once, on first use."""
        if self._event is None:
            self._event = Event.from_trusted(self.body)
        return self._event

    def __repr__(self) -> str:
        return f"Record(offset={self.offset}, partition={self.partition})"


class EventLog(ABC):
    """An append-only, partitioned event log with consumer groups."""

    partitions: int

    async def start(self) -> None:
        """Open connections and create storage; call once before use."""

    @abstractmethod
    async def close(self) -> None:
        """Flush pending appends and release resources."""

    @abstractmethod
    async def append(self, events: Sequence[Event]) -> list[Appended]:
        """Append events durably, skipping ids already in the log.

        The call returns once every event is on stable storage; the results are
        in the order of `events`.
        """

    @abstractmethod
    async def read(self, positions: Mapping[int, int], limit: int) -> list[Record]:
        """Return up to `limit` records in offset order.

        Only partitions named in `positions` are read, and from each only the
        records whose offset is greater than the given position.
        """

    @abstractmethod
    async def wait_for_append(self, timeout: float) -> None:
        """Wait until something is appended or `timeout` seconds pass."""

    @abstractmethod
    async def committed(self, group: str) -> dict[int, int]:
        """Return the committed offset of each partition for a consumer group.

        A partition that the group never committed has offset 0, so reading
        from the returned positions starts at the beginning of the log.
        """

    @abstractmethod
    async def commit(self, group: str, offsets: Mapping[int, int]) -> None:
        """Store the last finished offset per partition for a consumer group."""

    @abstractmethod
    async def seek(
        self,
        group: str,
        *,
        offset: int | None = None,
        time: datetime | None = None,
    ) -> dict[int, int]:
        """Move a consumer group so that its next read starts at an offset or time.

        With `offset`, the group resumes at the first record at or after that
        offset; with `time`, at the first record appended at or after that time.
        Returns the new committed offsets.
        """

    @abstractmethod
    async def end_offset(self) -> int:
        """Return the offset of the last record in the log, or 0 when empty."""

    @abstractmethod
    async def lag(self, group: str) -> int:
        """Return how many records the group has not yet committed."""

    @abstractmethod
    async def trim(
        self, *, max_age_seconds: float | None = None, max_bytes: int | None = None
    ) -> int:
        """Delete the oldest records beyond an age or a total size; return the count."""
