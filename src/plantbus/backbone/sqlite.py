"""The embedded event log: one SQLite file in WAL mode with group commit.

Appends from many coroutines are gathered into one transaction, run on a single
writer thread, and each caller resumes once that transaction is committed with
`synchronous = FULL`. Reads run on their own thread and connection, so a
commit in progress does not block them. The SQL lives in
`plantbus.backbone.sqlite_store`.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time as clock
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from plantbus.backbone import sqlite_store as store
from plantbus.backbone.log import (
    Appended,
    AppendWatch,
    EventLog,
    Record,
    check_positions,
    check_seek_target,
    partition_for,
)
from plantbus.errors import BackboneError
from plantbus.events.envelope import Event

logger = logging.getLogger("plantbus.backbone")

_T = TypeVar("_T")

_Outcome = list[Appended] | None
_Pending = tuple[store.AppendOp | store.CommitOp, "asyncio.Future[_Outcome]"]


class SqliteLog(EventLog):
    """Store the event log in one SQLite file, for a hub that runs in one process."""

    def __init__(
        self,
        path: Path,
        partitions: int = 16,
        *,
        busy_timeout: float = 5.0,
        cache_mib: int = store.CACHE_MIB,
        poll_interval: float = 0.1,
        trim_chunk: int = 10_000,
    ) -> None:
        if partitions < 1:
            raise ValueError(
                f"`partitions` is {partitions!r}: a log needs at least one partition."
            )
        self.path = Path(path)
        self.partitions = partitions
        # Seconds that a commit waits for a lock held by another connection.
        self.busy_timeout = busy_timeout
        # Page cache of each of the two connections, in MiB.
        self.cache_mib = cache_mib
        # Records deleted per transaction by trim, so appends can run in between.
        self.trim_chunk = trim_chunk

        self._writer: ThreadPoolExecutor | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._write_connection: sqlite3.Connection | None = None
        self._read_connection: sqlite3.Connection | None = None
        self._pending: list[_Pending] = []
        self._flush_task: asyncio.Task[None] | None = None
        self._closing = False
        # wait_for_append reads the last offset every poll_interval seconds, to
        # find appends by other processes to the same file.
        self._watch = AppendWatch(self._poll_last_offset, poll_interval)

    async def start(self) -> None:
        """Open the file, create its tables on first use and check the partitions."""
        if self._writer is not None:
            raise BackboneError(
                f"The event log at {str(self.path)!r} is already started."
            )
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="plantbus-log-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="plantbus-log-reader")

        try:
            self._write_connection = await self._on_writer(
                "open", store.connect, self.path, self.busy_timeout, self.cache_mib
            )
            last_offset = await self._on_writer(
                "create its tables",
                store.create_schema,
                self._write_connection,
                self.path,
                self.partitions,
            )
            self._watch.note(last_offset)
            self._read_connection = await self._on_reader(
                "open", store.connect, self.path, self.busy_timeout, self.cache_mib
            )
        except BaseException:
            await self._release()
            raise
        logger.info(
            "Opened event log %s with %d partitions at offset %d",
            self.path,
            self.partitions,
            self._watch.last_offset,
        )

    async def close(self) -> None:
        """Wait for pending appends and commits, then close both connections."""
        if self._closing:
            return
        self._closing = True
        if self._flush_task is not None:
            await self._flush_task
        await self._release()
        logger.info(
            "Closed event log %s at offset %d", self.path, self._watch.last_offset
        )

    async def append(self, events: Sequence[Event]) -> list[Appended]:
        """Append events in one durable transaction shared with concurrent callers."""
        self._check_open()
        if not events:
            return []

        prepared: list[store.PreparedEvent] = []
        for event in events:
            try:
                body = event.to_json()
            except TypeError as exc:
                raise BackboneError(
                    f"Event {event.id!r} of type {event.type!r} cannot be stored "
                    f"because its data is not JSON-serialisable ({exc}). Convert "
                    "values such as Decimal or datetime to strings before appending."
                ) from exc
            partition = partition_for(event.key, self.partitions)
            prepared.append((event.id, partition, event.type, body))

        outcome = await self._submit(store.AppendOp(prepared))
        assert outcome is not None
        return outcome

    async def read(self, positions: Mapping[int, int], limit: int) -> list[Record]:
        """Return up to `limit` records after each partition's position."""
        self._check_open()
        check_positions(positions, "positions", self.partitions)
        if limit <= 0 or not positions:
            return []

        self._watch.mark_read()
        return await self._on_reader(
            "read", store.read_records, self._read_connection, dict(positions), limit
        )

    async def wait_for_append(self, timeout: float) -> None:
        """Wait for a record newer than this task's last read, or `timeout` seconds."""
        self._check_open()
        await self._watch.wait(timeout)

    async def committed(self, group: str) -> dict[int, int]:
        """Return the committed offset of each partition for a consumer group."""
        self._check_open()
        return await self._on_reader(
            "read committed offsets",
            store.committed_offsets,
            self._read_connection,
            group,
            self.partitions,
        )

    async def commit(self, group: str, offsets: Mapping[int, int]) -> None:
        """Store offsets durably, in the same transaction as concurrent appends."""
        self._check_open()
        check_positions(offsets, "offsets", self.partitions)
        if not offsets:
            return
        await self._submit(store.CommitOp(group, dict(offsets)))

    async def seek(
        self,
        group: str,
        *,
        offset: int | None = None,
        time: datetime | None = None,
    ) -> dict[int, int]:
        """Move a consumer group to an offset or to the first record at a time."""
        self._check_open()
        check_seek_target(group, offset, time)
        moment = None if time is None else time.timestamp()

        offsets = await self._on_writer(
            "seek",
            store.seek_group,
            self._write_connection,
            group,
            self.partitions,
            offset=offset,
            moment=moment,
        )
        logger.info(
            "Moved consumer group %s to offset %d (requested offset=%s time=%s)",
            group,
            offsets[0] + 1,
            offset,
            time,
        )
        return offsets

    async def end_offset(self) -> int:
        """Return the last offset ever appended, 0 when nothing was ever appended."""
        self._check_open()
        # NOTE: after trim has deleted every record this is still the offset of
        # the last deleted record, so that lag and committed offsets stay valid.
        return await self._poll_last_offset()

    async def lag(self, group: str) -> int:
        """Count the records after the group's committed offset in every partition."""
        self._check_open()
        return await self._on_reader(
            "count the lag",
            store.count_lag,
            self._read_connection,
            group,
            self.partitions,
        )

    async def trim(
        self, *, max_age_seconds: float | None = None, max_bytes: int | None = None
    ) -> int:
        """Delete the oldest records beyond an age or a total body size; count them."""
        self._check_open()
        if max_age_seconds is None and max_bytes is None:
            return 0
        before = None if max_age_seconds is None else clock.time() - max_age_seconds

        # Many short transactions instead of one long one, so that appends
        # queued meanwhile are not held up by a large deletion.
        # NOTE: later appends reuse the freed pages, but the file never shrinks;
        # only VACUUM, run while no hub uses the file, gives the space back.
        deleted = 0
        while True:
            step = await self._on_writer(
                "trim",
                store.trim_step,
                self._write_connection,
                before=before,
                max_bytes=max_bytes,
                chunk=self.trim_chunk,
            )
            deleted += step
            if step < self.trim_chunk:
                break
        if deleted:
            logger.info(
                "Trimmed %d records from event log %s (max_age_seconds=%s "
                "max_bytes=%s)",
                deleted,
                self.path,
                max_age_seconds,
                max_bytes,
            )
        return deleted

    async def _submit(
        self, op: store.AppendOp | store.CommitOp
    ) -> list[Appended] | None:
        future: asyncio.Future[list[Appended] | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending.append((op, future))
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        # Everything queued while one transaction runs goes into the next one:
        # this is the group commit.
        while self._pending:
            batch, self._pending = self._pending, []
            ops = [op for op, _ in batch]
            try:
                outcomes = await self._on_writer(
                    "append", store.write_batch, self._write_connection, ops
                )
            except Exception as exc:
                logger.error(
                    "Transaction of %d appends and commits failed on %s: %s",
                    len(ops),
                    self.path,
                    exc,
                )
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue

            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)
            self._watch.note(
                max(
                    (r.offset for o in outcomes if o for r in o if not r.duplicate),
                    default=0,
                )
            )

    async def _poll_last_offset(self) -> int:
        last = await self._on_reader(
            "read the last offset", store.last_offset, self._read_connection
        )
        self._watch.note(last)
        return last

    def _check_open(self) -> None:
        if self._closing:
            raise BackboneError(
                f"The event log at {str(self.path)!r} is closed; open a new SqliteLog."
            )
        if self._write_connection is None or self._read_connection is None:
            raise BackboneError(
                f"The event log at {str(self.path)!r} is not open: call start() "
                "before using it."
            )

    async def _on_writer(
        self, action: str, function: Callable[..., _T], *args: object, **kwargs: object
    ) -> _T:
        return await self._run(self._writer, action, function, *args, **kwargs)

    async def _on_reader(
        self, action: str, function: Callable[..., _T], *args: object, **kwargs: object
    ) -> _T:
        return await self._run(self._reader, action, function, *args, **kwargs)

    async def _run(
        self,
        executor: ThreadPoolExecutor | None,
        action: str,
        function: Callable[..., _T],
        *args: object,
        **kwargs: object,
    ) -> _T:
        if executor is None:
            raise BackboneError(
                f"The event log at {str(self.path)!r} is not open: call start() "
                "before using it."
            )

        def call() -> _T:
            return function(*args, **kwargs)

        try:
            return await asyncio.get_running_loop().run_in_executor(executor, call)
        except sqlite3.Error as exc:
            raise store.describe_error(
                exc, self.path, action, self.busy_timeout
            ) from exc

    async def _release(self) -> None:
        for connection, executor in (
            (self._write_connection, self._writer),
            (self._read_connection, self._reader),
        ):
            if connection is not None and executor is not None:
                await asyncio.get_running_loop().run_in_executor(
                    executor, connection.close
                )
        for executor in (self._writer, self._reader):
            if executor is not None:
                executor.shutdown(wait=False)
        self._write_connection = None
        self._read_connection = None
        self._writer = None
        self._reader = None
