"""The interface of the event log that every backbone implements.

The log is append-only and split into a fixed number of partitions. An event's
partition follows from its partition key, so the events of one key stay in
append order. Offsets are positions in the whole log: they increase with every
append, and the offsets within one partition increase too, though not by one.
A consumer group keeps one committed offset per partition: the offset of the
last record it has finished with.
"""

from __future__ import annotations

import asyncio
import heapq
import weakref
import zlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from plantbus.events.envelope import Event


def partition_for(key: str, partitions: int) -> int:
    """Return the partition of a partition key; stable across processes and hosts."""
    return zlib.crc32(key.encode("utf-8")) % partitions


def check_positions(values: Mapping[int, int], field: str, partitions: int) -> None:
    """Raise ValueError for a partition outside the log or a negative offset."""
    for partition, offset in values.items():
        if not 0 <= partition < partitions:
            raise ValueError(
                f"`{field}` names partition {partition!r}, but the log has "
                f"partitions 0 to {partitions - 1}."
            )
        if offset < 0:
            raise ValueError(
                f"`{field}` has the invalid offset {offset!r} for partition "
                f"{partition}. Offsets are 0 or greater."
            )


def check_seek_target(group: str, offset: int | None, time: datetime | None) -> None:
    """Raise ValueError unless exactly one of `offset` and an aware `time` is set."""
    if (offset is None) == (time is None):
        raise ValueError(
            f"seek() of group {group!r} needs exactly one of `offset` and `time`, "
            f"but it got offset={offset!r} and time={time!r}."
        )
    if time is not None and time.utcoffset() is None:
        raise ValueError(
            f"seek() `time` is {time!r} without a timezone. Pass an aware "
            "datetime such as datetime.now(UTC)."
        )


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

    async def consume(
        self, group: str, positions: Mapping[int, int], limit: int
    ) -> list[Record]:
        """Read as `read` does, on behalf of a consumer group.

        A backbone with server-side consumer groups reads through the group's
        consumers, so that `commit` acknowledges what was read. The caller
        reads each partition on from the last record returned, or from the
        group's committed offset. Records handed back with `nak` whose delay
        has passed come first, although their offsets are at or below the
        positions.
        """
        returned = self._due_naks(group, positions)
        return returned + await self.read(positions, limit)

    async def leave(self, group: str, partitions: list[int]) -> None:
        """Note that this process stopped reading partitions for a group.

        Call it once their records are committed, before another process may
        take them. A backbone with server-side consumer groups lets go of the
        partitions' consumers, so that taking one back later starts afresh.
        """
        waiting = self._handed_back(group)
        waiting[:] = [
            entry for entry in waiting if entry[2].partition not in partitions
        ]
        heapq.heapify(waiting)

    async def nak(self, group: str, record: Record, delay: float) -> bool:
        """Hand a consumed record back, to be consumed again after `delay` seconds.

        The record stays uncommitted: a group that never commits past it
        gets it again after a crash too. Returns False when the backbone
        cannot return this record (it was not consumed through this handle).
        This version keeps the record in the process; a backbone with
        server-side consumer groups lets the server hold it.
        """
        due = asyncio.get_running_loop().time() + delay
        waiting = self._handed_back(group)
        heapq.heappush(waiting, (due, record.offset, record))
        return True

    def _handed_back(self, group: str) -> list[tuple[float, int, Record]]:
        """Return the group's records handed back with `nak`, a heap by due time."""
        # Kept in the instance dict, so that subclasses need no __init__ call.
        groups: dict[str, list[tuple[float, int, Record]]]
        groups = self.__dict__.setdefault("_handed_back_records", {})
        return groups.setdefault(group, [])

    def _due_naks(self, group: str, positions: Mapping[int, int]) -> list[Record]:
        waiting = self._handed_back(group)
        if not waiting:
            return []
        now = asyncio.get_running_loop().time()
        due: list[Record] = []
        while waiting and waiting[0][0] <= now:
            entry = heapq.heappop(waiting)
            # A partition the caller no longer reads drops its records; the
            # group reads them again from its committed offset.
            if entry[2].partition in positions:
                due.append(entry[2])
        return sorted(due, key=lambda record: record.offset)

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


class AppendWatch:
    """Track the last offset known to this process and wake tasks waiting past it."""

    def __init__(
        self, poll: Callable[[], Awaitable[int]], poll_interval: float
    ) -> None:
        # Returns the log's last offset. Polling it finds appends by other
        # processes that no `note` call reported.
        self._poll = poll
        self.poll_interval = poll_interval
        self.last_offset = 0
        # Per consumer task, the last offset known when that task last read.
        self._seen: weakref.WeakKeyDictionary[asyncio.Task[object], int] = (
            weakref.WeakKeyDictionary()
        )
        self._appended = asyncio.Event()

    def note(self, offset: int) -> None:
        """Record an offset that exists, and wake the waiters if it is new."""
        if offset <= self.last_offset:
            return
        self.last_offset = offset
        # Wake every waiter, then give later waiters a fresh event to wait on.
        appended, self._appended = self._appended, asyncio.Event()
        appended.set()

    def mark_read(self) -> None:
        """Remember the last known offset as seen by the current task."""
        task = asyncio.current_task()
        if task is not None:
            self._seen[task] = self.last_offset

    async def wait(self, timeout: float) -> None:
        """Wait for an offset newer than the current task has seen, or `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        task = asyncio.current_task()
        seen = self._seen.get(task, self.last_offset) if task else self.last_offset

        while self.last_offset <= seen:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(
                    self._appended.wait(), min(remaining, self.poll_interval)
                )
            except TimeoutError:
                self.note(await self._poll())
