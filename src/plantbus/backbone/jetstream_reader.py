"""Reads of the JetStream log by partition positions, with a reusable cursor.

`EventLog.read` names a position per partition and expects the records after
them in stream order. The reader serves that from one ephemeral consumer (a
`Scan`) per asyncio task. The consumer starts at the first record after the
positions, which one direct get per partition finds, so a partition that has
been idle since offset 0 does not make the scan start at the beginning of the
stream. Records at or below their partition's position, and records of
partitions that the read did not name, are skipped.

A pipeline reads page after page from where the last page ended, so the next
read usually continues the same consumer. The reader reuses it whenever no
record that the new read requests can be behind the consumer, and opens a new one
otherwise (after a seek, or when another partition joins the read).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.aio.msg import Msg

from plantbus.backbone.jetstream_scan import Scan, delivery_info, next_seq
from plantbus.backbone.jetstream_stream import partition_filter
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


# Maximum time in seconds that one read keeps pulling once it has records.
_READ_BUDGET_SECONDS = 0.1


class Reader:
    """Read records by partition positions through per-task consumers."""

    def __init__(
        self, nc: Client, stream: str, partitions: int, timeout: float
    ) -> None:
        self._nc = nc
        self._manager = nc.jsm()
        self.stream = stream
        self.partitions = partitions
        self.timeout = timeout
        self._cursors: dict[asyncio.Task[object], _Cursor] = {}
        # Highest stream sequence any read has passed.
        self.last_seen = 0

    def partition_subject(self, partition: int) -> str:
        """Return the subject filter of one partition."""
        return partition_filter(self.stream, partition)

    def partition_of(self, subject: str) -> int:
        """Return the partition number from a message subject."""
        return int(subject[len(self.stream) + 3 :].split(".", 1)[0])

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
            subject = f"{self.stream}.p.>"
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
            requested = limit - len(records)
            messages = await cursor.scan.pull(requested)
            for msg in messages:
                record = self._record(msg)
                if record.offset > positions.get(record.partition, record.offset):
                    records.append(record)
            # Return what is in hand once the stream is caught up or the read
            # has taken a while: a trickle of appends would otherwise keep one
            # read pulling a message at a time while the pipeline waits.
            if len(messages) < requested or (
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
