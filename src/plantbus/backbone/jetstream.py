"""The event log on NATS JetStream, for hubs that run as several processes.

Events go to one stream with the subjects `<stream>.p.<partition>.<event
type>`, and offsets are stream sequences. The event id is the `Nats-Msg-Id`,
which the stream de-duplicates within its duplicate window. docs/jetstream.md
describes the layout and the failure handling.

A consumer group is a set of durable consumers, one per partition
(`jetstream_groups`): `consume` reads through them and `commit` acknowledges,
so a group's committed offsets are the consumers' acknowledgement floors.
`read` serves readers without a group (reports, replays) from short-lived
consumers.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import TypeVar

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.kv import KeyValue
from nats.js.manager import JetStreamManager

from plantbus.backbone import jetstream_offsets as legacy
from plantbus.backbone import jetstream_scan as scans
from plantbus.backbone import jetstream_stream as streams
from plantbus.backbone.jetstream_groups import GroupConsumers
from plantbus.backbone.jetstream_publish import Outgoing, Publisher
from plantbus.backbone.jetstream_reader import Reader
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

_NAME = re.compile(r"[A-Za-z0-9_-]+")


class JetStreamLog(EventLog):
    """Store the event log in a NATS JetStream stream shared by many processes."""

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        stream: str = "plantbus",
        partitions: int = 16,
        *,
        replicas: int = 1,
        duplicate_window_seconds: float = 3600.0,
        max_age_seconds: float | None = None,
        max_bytes: int | None = None,
        max_in_flight: int = 2000,
        timeout: float = 5.0,
        retry_seconds: float = 60.0,
        connect_seconds: float = 10.0,
        poll_interval: float = 0.5,
    ) -> None:
        if partitions < 1:
            raise ValueError(
                f"`partitions` is {partitions!r}: a log needs at least one partition."
            )
        if not _NAME.fullmatch(stream):
            raise ValueError(
                f"`stream` is {stream!r}: use only letters, digits, '-' and '_', "
                "because the name is also the first token of every subject."
            )
        # Comma-separated server URLs. The client fails over between them.
        self.url = url
        self.stream = stream
        self.partitions = partitions
        self.replicas = replicas
        self.duplicate_window_seconds = duplicate_window_seconds
        # Stream limits that the server enforces by itself, or None for no limit.
        self.max_age_seconds = max_age_seconds
        self.max_bytes = max_bytes
        # Publish acknowledgements outstanding at once, over all appends.
        self.max_in_flight = max_in_flight
        # Seconds to wait for one response of the server.
        self.timeout = timeout
        # Seconds an operation retries transient failures (no stream leader,
        # reconnecting) before it raises BackboneError.
        self.retry_seconds = retry_seconds
        self.connect_seconds = connect_seconds

        self._nc: Client | None = None
        # The offsets bucket of an earlier version, read for groups that have
        # no durable consumers yet.
        self._legacy: KeyValue | None = None
        self._groups: GroupConsumers | None = None
        self._publisher: Publisher | None = None
        self._reader: Reader | None = None
        self._closing = False
        self._watch = AppendWatch(self._stream_last_seq, poll_interval)
        # Number of appends in progress. close() waits until it is zero.
        self._appending = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        """Connect, create or update the stream and the offsets bucket."""
        if self._nc is not None:
            raise BackboneError(f"The event log {self.stream!r} is already started.")
        self._nc = await streams.connect(self.url, self.stream, self.connect_seconds)

        try:
            config = streams.stream_config(
                self.stream,
                self.partitions,
                replicas=self.replicas,
                duplicate_window_seconds=self.duplicate_window_seconds,
                max_age_seconds=self.max_age_seconds,
                max_bytes=self.max_bytes,
            )
            self._legacy = await streams.prepare_storage(
                self._nc, self.url, config, self.partitions, self.timeout
            )
            self._publisher = Publisher(
                self._nc,
                self.stream,
                max_in_flight=self.max_in_flight,
                ack_timeout=self.timeout,
                publish_timeout=self.retry_seconds,
            )
            await self._publisher.start()
            self._reader = Reader(self._nc, self.stream, self.partitions, self.timeout)
            self._groups = GroupConsumers(
                self._nc,
                self.stream,
                self.timeout,
                self.retry_seconds,
                lambda: self._watch.last_offset,
            )
            await self._nc.subscribe(
                f"{self.stream}.appended", cb=self._on_announcement
            )
            self._watch.note(await self._stream_last_seq())
        except BaseException:
            await self._nc.close()
            self._nc = None
            raise
        logger.info(
            "Opened JetStream event log %s at %s with %d partitions, %d replicas, "
            "at offset %d",
            self.stream,
            self.url,
            self.partitions,
            self.replicas,
            self._watch.last_offset,
        )

    async def close(self) -> None:
        """Wait for outstanding acknowledgements, delete scans and disconnect."""
        if self._closing:
            return
        self._closing = True
        if self._nc is None:
            return
        try:
            await asyncio.wait_for(self._idle.wait(), self.retry_seconds)
        except TimeoutError:
            logger.warning(
                "Closing event log %s with %d appends still waiting for their "
                "acknowledgements; they fail with BackboneError",
                self.stream,
                self._appending,
            )
        if self._reader is not None:
            await self._reader.close()
        if self._groups is not None:
            await self._groups.close()
        if self._publisher is not None:
            await self._publisher.close()
        await self._nc.close()
        logger.info("Closed JetStream event log %s", self.stream)

    async def append(self, events: Sequence[Event]) -> list[Appended]:
        """Publish events pipelined and return once the stream stored every one."""
        publisher = self._check_open()._publisher
        assert publisher is not None
        if not events:
            return []

        outgoing: list[Outgoing] = []
        partitions: list[int] = []
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
            partitions.append(partition)
            subject = streams.subject_for(self.stream, partition, event.type)
            outgoing.append(Outgoing(subject, body, event.id))

        # NOTE: when an acknowledgement was lost and the retry finds the event
        # already stored, the result reports duplicate=True although this call
        # stored it. The offset is right either way.
        self._appending += 1
        self._idle.clear()
        try:
            acks = await publisher.publish(outgoing)
        finally:
            self._appending -= 1
            if not self._appending:
                self._idle.set()
        appended = [
            Appended(event.id, ack.seq, partition, ack.duplicate)
            for event, ack, partition in zip(events, acks, partitions, strict=True)
        ]
        last = max((a.offset for a in appended if not a.duplicate), default=0)
        if last:
            self._watch.note(last)
            assert self._nc is not None
            await self._nc.publish(f"{self.stream}.appended", str(last).encode())
        return appended

    async def read(self, positions: Mapping[int, int], limit: int) -> list[Record]:
        """Return up to `limit` records after each partition's position."""
        reader = self._check_open()._reader
        assert reader is not None
        check_positions(positions, "positions", self.partitions)
        if limit <= 0 or not positions:
            return []

        records = await self._retry(
            "read the event log", lambda: reader.read(positions, limit)
        )
        self._watch.note(reader.last_seen)
        self._watch.mark_read()
        return records

    async def consume(
        self, group: str, positions: Mapping[int, int], limit: int
    ) -> list[Record]:
        """Return up to `limit` records after the positions, read for a group."""
        groups = self._check_open()._groups
        assert groups is not None
        check_positions(positions, "positions", self.partitions)
        # A read of no partition still records that this process stopped
        # reading the partitions of its previous read.
        records = await self._retry(
            f"read consumer group {group!r}",
            lambda: groups.consume(group, positions, limit),
        )
        self._watch.note(groups.last_seen)
        self._watch.mark_read()
        return records

    async def leave(self, group: str, partitions: list[int]) -> None:
        """Let go of the group's consumers of partitions this process handed back."""
        groups = self._check_open()._groups
        assert groups is not None
        await groups.leave(group, partitions)

    async def nak(self, group: str, record: Record, delay: float) -> bool:
        """Have the group's durable consumer send a record again after `delay` s."""
        groups = self._check_open()._groups
        assert groups is not None
        return await groups.nak(group, record, delay)

    async def wait_for_append(self, timeout: float) -> None:
        """Wait for a record newer than this task's last read, or `timeout` seconds."""
        self._check_open()
        # Appends by other JetStreamLogs are announced on `<stream>.appended`;
        # others are found by reading the stream state every poll_interval.
        await self._watch.wait(timeout)

    async def committed(self, group: str) -> dict[int, int]:
        """Return the acknowledgement floor of each partition's durable consumer."""
        groups = self._check_open()._groups
        assert groups is not None
        floors = await self._retry(
            f"load the offsets of consumer group {group!r}",
            lambda: groups.committed(group),
        )
        earlier = await self._legacy_offsets(group, floors)
        return {p: floors.get(p, earlier.get(p, 0)) for p in range(self.partitions)}

    async def commit(self, group: str, offsets: Mapping[int, int]) -> None:
        """Acknowledge up to the offsets through the group's durable consumers."""
        groups = self._check_open()._groups
        assert groups is not None
        check_positions(offsets, "offsets", self.partitions)
        if not offsets:
            return
        await self._retry(
            f"commit offsets of consumer group {group!r}",
            lambda: groups.commit(group, offsets),
        )

    async def seek(
        self,
        group: str,
        *,
        offset: int | None = None,
        time: datetime | None = None,
    ) -> dict[int, int]:
        """Move a consumer group to an offset or to the first record at a time."""
        groups = self._check_open()._groups
        assert groups is not None
        check_seek_target(group, offset, time)

        last = await self._stream_last_seq()
        if time is not None:
            moment = time
            first = await self._retry(
                f"find the first record at {time.isoformat()}",
                lambda: scans.first_seq_at(
                    *self._scan_args(), f"{self.stream}.p.>", moment, self.timeout
                ),
            )
            # Nothing stored since `time`: resume after the last record.
            position = last if first is None else first - 1
        else:
            assert offset is not None
            # Past the end there is nothing to read yet; resuming beyond it
            # would skip the records appended next.
            position = min(max(offset - 1, 0), last)

        positions = dict.fromkeys(range(self.partitions), position)
        await self._retry(
            f"move consumer group {group!r}",
            lambda: groups.move(group, positions),
        )
        logger.info(
            "Moved consumer group %s of %s to offset %d (requested offset=%s time=%s)",
            group,
            self.stream,
            position + 1,
            offset,
            time,
        )
        return positions

    async def end_offset(self) -> int:
        """Return the stream's last sequence, 0 when nothing was ever appended."""
        self._check_open()
        # The stream keeps its last sequence after purges, so lag and
        # committed offsets stay valid after trim.
        last = await self._stream_last_seq()
        self._watch.note(last)
        return last

    async def lag(self, group: str) -> int:
        """Count the records after the group's committed offset in every partition."""
        groups = self._check_open()._groups
        assert groups is not None
        found = await self._retry(
            f"count the lag of consumer group {group!r}",
            lambda: groups.generations(group),
        )
        # A durable consumer counts what it has not delivered and what is
        # not acknowledged yet.
        counted = sum(generations[-1].behind for generations in found.values())
        if len(found) == self.partitions:
            return counted

        # Partitions the group never read have no consumer yet.
        earlier = await self._legacy_offsets(group, found)
        last = await self._stream_last_seq()
        missing = {
            p: earlier.get(p, 0)
            for p in range(self.partitions)
            if p not in found and earlier.get(p, 0) < last
        }
        if not missing:
            return counted
        return counted + await self._retry(
            f"count the lag of consumer group {group!r}",
            lambda: scans.count_lag(
                *self._scan_args(), missing, self.partitions, self.timeout
            ),
        )

    async def trim(
        self, *, max_age_seconds: float | None = None, max_bytes: int | None = None
    ) -> int:
        """Purge the oldest records beyond an age or a total body size; count them."""
        nc = self._check_open()._nc
        assert nc is not None
        return await streams.trim(
            nc,
            self.stream,
            max_age_seconds=max_age_seconds,
            max_bytes=max_bytes,
            timeout=self.timeout,
            retry_seconds=self.retry_seconds,
        )

    async def _legacy_offsets(
        self, group: str, found: Mapping[int, object]
    ) -> dict[int, int]:
        bucket = self._legacy
        if bucket is None or len(found) == self.partitions:
            return {}
        return await self._retry(
            f"load the earlier offsets of consumer group {group!r}",
            lambda: legacy.load(bucket, group),
        )

    def _scan_args(self) -> tuple[Client, JetStreamManager, str]:
        assert self._nc is not None
        return self._nc, self._nc.jsm(), self.stream

    async def _stream_last_seq(self) -> int:
        nc = self._nc
        assert nc is not None

        async def last_seq() -> int:
            info = await nc.jsm().stream_info(self.stream)
            return int(info.state.last_seq)

        return await self._retry(f"read the state of stream {self.stream!r}", last_seq)

    async def _retry(self, action: str, operation: Callable[[], Awaitable[_T]]) -> _T:
        return await streams.retrying(action, operation, self.retry_seconds)

    async def _on_announcement(self, msg: Msg) -> None:
        try:
            self._watch.note(int(msg.data))
        except ValueError:
            logger.warning(
                "Ignored an announcement on %s that is not a sequence: %r",
                msg.subject,
                msg.data[:100],
            )

    def _check_open(self) -> JetStreamLog:
        if self._closing:
            raise BackboneError(
                f"The event log {self.stream!r} is closed; open a new JetStreamLog."
            )
        if self._nc is None or self._reader is None:
            raise BackboneError(
                f"The event log {self.stream!r} is not open: call start() before "
                "using it."
            )
        return self
