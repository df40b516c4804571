"""Reads of the JetStream log by partition positions, with a reusable cursor.

`EventLog.read` names a position per partition and wants the records after
them in stream order. The reader serves that from one ephemeral consumer (a
`Scan`) per asyncio task. The consumer starts at the first record after the
positions, which one direct get per partition finds, so a partition that has
been idle since offset 0 does not make the scan start at the beginning of the
stream. Records at or below their partition's position, and records of
partitions that the read did not name, are skipped.

A pipeline reads page after page from where the last page ended, so the next
read usually continues the same consumer. The reader reuses it whenever no
record that the new read wants can be behind the consumer, and opens a new one
otherwise (after a seek, or when another partition joins the read).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.manager import JetStreamManager

from plantbus.backbone.jetstream_scan import Scan, delivery_info, next_seq
from plantbus.backbone.log import Record

# A reused consumer is skipped ahead by opening a new one when the next read
# starts this many sequences past it, because skipping records costs more.
_MAX_SKIP = 5000


@dataclass
class _Cursor:
    scan: Scan
    partitions: frozenset[int]
    # Per partition: every record of the partition that the consumer has
    # passed has an offset at or below this value.
    floor: dict[int, int] = field(default_factory=dict)

    def fits(self, positions: Mapping[int, int]) -> bool:
        if not set(positions) <= self.partitions:
            return False
        if any(positions[p] < self.floor[p] for p in positions):
            return False
        return min(positions.values()) < self.scan.last_seq + _MAX_SKIP


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
                f"`{field}` gives partition {partition} the offset {offset!r}; "
                "offsets are 0 or greater."
            )

# Longest time one read keeps pulling once it holds records.
_READ_BUDGET_SECONDS = 0.1


class Reader:
    """Read records by partition positions through per-task consumers."""

    def __init__(
        self,
        nc: Client,
        manager: JetStreamManager,
        stream: str,
        subject_prefix: str,
        partitions: int,
        timeout: float,
    ) -> None:
        self._nc = nc
        self._manager = manager
        self.stream = stream
        self.subject_prefix = subject_prefix
        self.partitions = partitions
        self.timeout = timeout
        self._cursors: dict[asyncio.Task[object], _Cursor] = {}
        # Highest stream sequence any read has passed.
        self.last_seen = 0

    def partition_subject(self, partition: int) -> str:
        """Return the subject filter of one partition."""
        return f"{self.subject_prefix}.p.{partition}.>"

    def partition_of(self, subject: str) -> int:
        """Return the partition number from a message subject."""
        return int(subject[len(self.subject_prefix) + 3 :].split(".", 1)[0])

    async def read(self, positions: Mapping[int, int], limit: int) -> list[Record]:
        """Return up to `limit` records after each partition's position."""
        task = asyncio.current_task()
        assert task is not None
        await self._forget_finished_tasks()

        cursor = self._cursors.get(task)
        if cursor is None or not cursor.fits(positions):
            if cursor is not None:
                del self._cursors[task]
                await cursor.scan.close()
            cursor = await self._open(positions)
            if cursor is None:
                return []
            self._cursors[task] = cursor

        try:
            return await self._read_from(cursor, positions, limit)
        except Exception:
            # The consumer is gone or in an unknown state (a pull cut short):
            # the next read starts a new one at the positions it is given.
            del self._cursors[task]
            await cursor.scan.close()
            raise

    async def close(self) -> None:
        """Delete every consumer this reader opened."""
        cursors, self._cursors = self._cursors, {}
        await asyncio.gather(*(cursor.scan.close() for cursor in cursors.values()))

    async def _open(self, positions: Mapping[int, int]) -> _Cursor | None:
        starts = await asyncio.gather(
            *(
                next_seq(self._manager, self.stream, self.partition_subject(p), pos)
                for p, pos in positions.items()
            )
        )
        found = [seq for seq in starts if seq is not None]
        if not found:
            return None

        if len(positions) == 1:
            [partition] = positions
            subject = self.partition_subject(partition)
            covered = frozenset(positions)
        else:
            subject = f"{self.subject_prefix}.p.>"
            covered = frozenset(range(self.partitions))
        scan = await Scan.open(
            self._nc,
            self._manager,
            self.stream,
            subject,
            start_seq=min(found),
            timeout=self.timeout,
        )
        scan.last_seq = min(found) - 1
        # Partitions the read did not name are passed from min(found) on.
        floor = {p: positions.get(p, scan.last_seq) for p in covered}
        return _Cursor(scan, covered, floor)

    async def _read_from(
        self, cursor: _Cursor, positions: Mapping[int, int], limit: int
    ) -> list[Record]:
        records: list[Record] = []
        started = time.monotonic()
        while len(records) < limit:
            wanted = limit - len(records)
            messages = await cursor.scan.pull(wanted)
            for msg in messages:
                record = self._record(msg)
                if record.offset > positions.get(record.partition, record.offset):
                    records.append(record)
            # Return what is in hand once the stream is caught up or the read
            # has taken a while: a trickle of appends would otherwise keep one
            # read pulling a message at a time while the pipeline waits.
            if len(messages) < wanted or (
                records and time.monotonic() - started > _READ_BUDGET_SECONDS
            ):
                break

        last = cursor.scan.last_seq
        self.last_seen = max(self.last_seen, last)
        for partition in cursor.floor:
            if partition not in positions:
                cursor.floor[partition] = max(cursor.floor[partition], last)
            else:
                cursor.floor[partition] = positions[partition]
        for record in records:
            cursor.floor[record.partition] = record.offset
        return records

    def _record(self, msg: Msg) -> Record:
        seq, _, stored_at = delivery_info(msg)
        return Record(seq, self.partition_of(msg.subject), msg.data, stored_at)

    async def _forget_finished_tasks(self) -> None:
        finished = [task for task in self._cursors if task.done()]
        for task in finished:
            await self._cursors.pop(task).scan.close()


class AppendWatch:
    """Track the last offset known to this process and wake tasks waiting past it."""

    def __init__(
        self, poll: Callable[[], Awaitable[int]], poll_interval: float
    ) -> None:
        # Reads the stream's last sequence, for appends that were not announced.
        self._poll = poll
        self.poll_interval = poll_interval
        self.last_offset = 0
        # Per consumer task, the last offset known when that task last read.
        self._seen: weakref.WeakKeyDictionary[asyncio.Task[object], int] = (
            weakref.WeakKeyDictionary()
        )
        self._appended = asyncio.Event()

    def note(self, offset: int) -> None:
        """Record an offset that exists; wake the waiters if it is new."""
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
