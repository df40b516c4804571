"""Consumer groups as JetStream durable consumers, one per group and partition.

A group reads a partition through its own durable pull consumer, which filters
on the partition's subject and acknowledges with `AckPolicy.ALL`. Committing
an offset acknowledges the last record at or below it that the consumer
delivered, so the consumer's acknowledgement floor is the group's committed
offset, and `nats consumer report` shows each group's progress.

A durable consumer's floor only moves forward, and a delivered but
unacknowledged message comes back only after `ack_wait`, behind later ones.
So a new generation of the consumer replaces the old one whenever a process
starts reading a partition. The same happens when an offset is set that the
consumer cannot reach by acknowledging: a seek, or a commit backwards or past
what was read. It starts right after the given offset, and the old generation
is deleted afterwards. The consumer names are
`<group key>-p<partition>-g<generation>-<token>`. The highest generation is
the current one. So after a crash between creating one and deleting the
other, the group goes on from the new one's floor. A process that still reads an old
generation (a worker that lost its partition lease but has not noticed yet)
finds it deleted at its next pull or acknowledgement and stops, instead of
taking records from the current reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import json
import logging
import re
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.js import api
from nats.js.errors import NotFoundError

from plantbus.backbone import jetstream_stream as streams
from plantbus.backbone.jetstream_scan import request_next
from plantbus.backbone.log import Record
from plantbus.errors import BackboneError

logger = logging.getLogger("plantbus.backbone")

_SAFE_GROUP = re.compile(r"[A-Za-z0-9_-]+")
_NAME = re.compile(
    r"(?P<group>.+)-p(?P<partition>\d+)-g(?P<gen>\d+)-(?P<token>[0-9a-f]+)"
)
# Maximum length of a group's name prefix. The rest of a consumer name takes
# up to 40 characters, and NATS allows 255.
_MAX_PREFIX = 200
# Rounds of pulls one read makes while new consumers do not serve them.
_PULL_ATTEMPTS = 5
# Maximum messages requested by one pull.
_PULL_BATCH = 1000
# Delivered and unacknowledged messages per consumer. A pipeline's records in
# work and read ahead stay far below this.
_MAX_ACK_PENDING = 100_000
# Seconds before the server sends an unacknowledged message again. A group
# acknowledges only below records in work, so a record that takes longer (a
# target that has been down for an hour) comes back once more, and the reader
# drops it because it has it already.
_ACK_WAIT_SECONDS = 3600.0


class ConsumerGone(BackboneError):
    """A group's durable consumer was deleted while this process read through it."""


def group_prefix(group: str) -> str:
    """Return the consumer name prefix of a group.

    Names of letters, digits, '-' and '_' are kept, others are hex-encoded,
    and long ones are replaced by a hash, because a consumer name has at most
    255 characters.
    """
    if _SAFE_GROUP.fullmatch(group):
        prefix = f"g-{group}"
    else:
        prefix = f"x-{group.encode('utf-8').hex()}"
    if len(prefix) > _MAX_PREFIX:
        prefix = f"h-{hashlib.sha256(group.encode('utf-8')).hexdigest()}"
    return prefix


@dataclass(frozen=True, order=True)
class Generation:
    """One durable consumer of a group's partition, with its floor and backlog."""

    number: int
    token: str
    name: str = field(compare=False)
    # The committed offset: the acknowledgement floor, or the offset before
    # the consumer's start while nothing is acknowledged.
    floor: int = field(compare=False, default=0)
    # Records after the floor: not delivered yet, or delivered and not
    # acknowledged.
    behind: int = field(compare=False, default=0)


def _generation(info: api.ConsumerInfo) -> tuple[str, int, Generation] | None:
    match = _NAME.fullmatch(info.name or "")
    if match is None:
        return None
    start = (info.config.opt_start_seq or 1) - 1
    acked = info.ack_floor.stream_seq if info.ack_floor else 0
    generation = Generation(
        int(match["gen"]),
        match["token"],
        info.name or "",
        max(acked or 0, start),
        (info.num_pending or 0) + (info.num_ack_pending or 0),
    )
    return match["group"], int(match["partition"]), generation


@dataclass
class _Attachment:
    """This process's reads of one partition through one consumer generation."""

    name: str
    partition: int
    # Offset of the last record handed to the caller.
    position: int
    # Offset of the last acknowledged record (the committed offset).
    acked: int
    # Consumer sequence of the last delivery received. Deliveries are
    # numbered without gaps, so a jump means one was lost on the way.
    consumer_seq: int = 0
    inbox: Subscription | None = None
    # Records received and not handed out yet, in offset order, with the
    # reply subject that acknowledges each.
    buffer: deque[tuple[Record, str]] = field(default_factory=deque)
    # Records handed out and not acknowledged, as (offset, reply subject).
    delivered: deque[tuple[int, str]] = field(default_factory=deque)
    # Records handed back with a delay: offset and when they are due again.
    naked: dict[int, float] = field(default_factory=dict)
    # Records the server sent again after their delay, to hand out next.
    returned: list[Record] = field(default_factory=list)
    # The log's last known offset when a pull last found nothing more.
    checked: int = -1
    done: asyncio.Future[str | None] | None = None
    expected: int = 0
    status: str | None = None
    deleted: bool = False
    broken: bool = False


def _sequences(reply: str) -> tuple[int, int, float]:
    """Return stream sequence, consumer sequence and store time from a reply subject.

    The subject is `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.
    <consumer seq>.<nanoseconds>.<pending>`, with two more tokens in front
    and one at the end in the newer form (as `jetstream_scan.delivery_info` reads).
    """
    tokens = reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[6]), int(tokens[7]) / 1e9
    return int(tokens[7]), int(tokens[8]), int(tokens[9]) / 1e9


class GroupConsumers:
    """Read, commit and move consumer groups through durable consumers."""

    def __init__(
        self,
        nc: Client,
        stream: str,
        timeout: float,
        retry_seconds: float,
        last_known: Callable[[], int],
    ) -> None:
        self._nc = nc
        self._manager = nc.jsm()
        self.stream = stream
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        # The log's last offset known to this process, for skipping pulls of
        # partitions that had nothing more when nothing was appended since.
        self._last_known = last_known
        self._attached: dict[tuple[str, int], _Attachment] = {}
        # Per group, the partitions named by the last read.
        self._named: dict[str, frozenset[int]] = {}
        # Highest stream sequence received through any consumer.
        self.last_seen = 0

    async def generations(self, group: str) -> dict[int, list[Generation]]:
        """Return every consumer generation of a group per partition, newest last."""
        prefix = group_prefix(group)
        found: dict[int, list[Generation]] = {}
        offset = 0
        while True:
            infos, total = await self._list_consumers(offset)
            for info in infos:
                parsed = _generation(info)
                if parsed is not None and parsed[0] == prefix:
                    found.setdefault(parsed[1], []).append(parsed[2])
            offset += len(infos)
            if not infos or offset >= total:
                break
        for generations in found.values():
            generations.sort()
        return found

    async def _list_consumers(self, offset: int) -> tuple[list[api.ConsumerInfo], int]:
        """Return one page of the stream's consumers and the total count.

        nats-py's `consumers_info` fails on a null entry, which nats-server
        2.9.10 lists for a consumer that is deleted meanwhile (seen in a test
        with workers starting and deleting generations). Those are skipped.
        """
        reply = await self._nc.request(
            f"$JS.API.CONSUMER.LIST.{self.stream}",
            json.dumps({"offset": offset}).encode(),
            timeout=self.timeout,
        )
        response = json.loads(reply.data)
        if "error" in response:
            error = response["error"]
            raise BackboneError(
                f"Listing the consumers of stream {self.stream!r} failed: "
                f"{error.get('description', error)} (code {error.get('code')})."
            )
        entries = response.get("consumers") or []
        infos = [api.ConsumerInfo.from_response(e) for e in entries if e is not None]
        return infos, int(response.get("total", 0))

    async def committed(self, group: str) -> dict[int, int]:
        """Return the floor of each partition's current consumer, where it has one."""
        found = await self.generations(group)
        return {p: gens[-1].floor for p, gens in found.items()}

    async def consume(
        self, group: str, positions: Mapping[int, int], limit: int
    ) -> list[Record]:
        """Return up to `limit` records after the positions, in offset order.

        Records handed back with `nak` that the server sent again come first
        and do not count against `limit`.
        """
        # A partition left out of a read keeps its consumer, because records
        # of it may still be in work and get committed or handed back. One
        # named again may have been with another process meanwhile, so it
        # gets a new generation, as does one read from another position.
        previous = self._named.get(group, frozenset())
        attaching = {
            p: position
            for p, position in positions.items()
            if p not in previous
            or (held := self._attached.get((group, p))) is None
            or held.position != position
        }
        if attaching:
            await self._attach(group, attaching)
        # Only now: after a failed attach, the retry must attach again.
        self._named[group] = frozenset(positions)
        if not positions:
            return []

        loop = asyncio.get_running_loop()
        for attempt in range(_PULL_ATTEMPTS):
            attachments = [self._attached[(group, p)] for p in positions]
            last_known = self._last_known()
            now = loop.time()
            await asyncio.gather(
                *(
                    self._pull(attachment, min(max(limit, 1), _PULL_BATCH), last_known)
                    for attachment in attachments
                    if self._wants_pull(attachment, last_known, now, limit)
                )
            )
            for attachment in attachments:
                if attachment.deleted:
                    raise self._deleted_error(group, attachment.name)
            broken = [a for a in attachments if a.broken]
            if broken:
                await self._resync(group, broken)
                continue
            # A new consumer in a cluster may not serve pulls for a moment:
            # the request gets "no responders" and nothing was delivered.
            if all(a.status != "503" or a.buffer for a in attachments):
                return self._take(attachments, limit)
            await asyncio.sleep(0.05 * (attempt + 1))
        raise TimeoutError(
            f"The consumers of group {group!r} on stream {self.stream!r} did not "
            "serve pulls."
        )

    async def commit(self, group: str, offsets: Mapping[int, int]) -> None:
        """Acknowledge up to each offset, or start a new generation there."""
        acks: list[tuple[_Attachment, int, str]] = []
        moves: dict[int, int] = {}
        for partition, offset in offsets.items():
            attachment = self._attached.get((group, partition))
            if attachment is None or not (
                attachment.acked <= offset <= attachment.position
            ):
                moves[partition] = offset
                continue
            # The last record handed out at or below the offset. Every record
            # of the partition up to the position was handed out, so there is
            # none between it and the offset to leave behind.
            last = None
            for seq, reply in attachment.delivered:
                if seq > offset:
                    break
                last = (seq, reply)
            if last is not None:
                acks.append((attachment, *last))
        await asyncio.gather(*(self._ack(group, *ack) for ack in acks))
        if moves:
            await self.move(group, moves)

    async def nak(self, group: str, record: Record, delay: float) -> bool:
        """Ask the server to send a record again after `delay` seconds.

        The consumer acknowledges with `AckPolicy.ALL`, so a later
        acknowledgement would count for this record too. The group commits
        only below records in work, and this one stays in work until it is
        back, so no acknowledgement passes it meanwhile.
        """
        attachment = self._attached.get((group, record.partition))
        if attachment is None:
            return False
        reply = next(
            (r for seq, r in attachment.delivered if seq == record.offset), None
        )
        if reply is None:
            return False
        request = {"delay": int(delay * 1e9)}
        await self._nc.publish(reply, b"-NAK " + json.dumps(request).encode())
        attachment.naked[record.offset] = asyncio.get_running_loop().time() + delay
        return True

    async def move(self, group: str, offsets: Mapping[int, int]) -> None:
        """Replace each partition's consumer by a new generation after the offset.

        This process's next read of such a partition starts another generation
        at the floor this one sets.
        """
        found = await self.generations(group)
        await asyncio.gather(
            *(
                self._replace(group, p, offset, found.get(p, []), attach=False)
                for p, offset in offsets.items()
            )
        )

    async def _attach(self, group: str, positions: Mapping[int, int]) -> None:
        """Start reading partitions at positions through new consumer generations.

        A new generation starts after the current floor, not after the
        position: records between the two may still be in work, and the
        floor must not pass them. They come again and are not handed out.
        """
        found = await self.generations(group)
        await asyncio.gather(
            *(
                self._replace(
                    group,
                    p,
                    min(found[p][-1].floor, position) if p in found else position,
                    found.get(p, []),
                    attach=True,
                    position=position,
                )
                for p, position in positions.items()
            )
        )

    async def _resync(self, group: str, broken: list[_Attachment]) -> None:
        """Read the partitions again from their floor with new consumers.

        The records up to each position come again. They are not handed out
        a second time; their new deliveries are what commits acknowledge.
        """
        for attachment in broken:
            logger.warning(
                "Consumer %s of group %s missed a delivery (after consumer "
                "sequence %d); reading partition %d again from offset %d",
                attachment.name,
                group,
                attachment.consumer_seq,
                attachment.partition,
                attachment.acked + 1,
            )
        found = await self.generations(group)
        await asyncio.gather(
            *(
                self._replace(
                    group,
                    a.partition,
                    a.acked,
                    found.get(a.partition, []),
                    attach=True,
                    position=a.position,
                )
                for a in broken
            )
        )

    async def leave(self, group: str, partitions: list[int]) -> None:
        """Stop reading partitions of a group; a later read starts a new generation."""
        self._named[group] = self._named.get(group, frozenset()) - set(partitions)
        for partition in partitions:
            attachment = self._attached.get((group, partition))
            if attachment is not None:
                await self._detach(group, partition, attachment)

    async def close(self) -> None:
        """Stop every read; the durable consumers stay on the server."""
        for (group, partition), attachment in list(self._attached.items()):
            await self._detach(group, partition, attachment)

    async def _replace(
        self,
        group: str,
        partition: int,
        offset: int,
        old: list[Generation],
        *,
        attach: bool,
        position: int | None = None,
    ) -> None:
        previous = self._attached.get((group, partition))
        if previous is not None:
            await self._detach(group, partition, previous)

        number = old[-1].number + 1 if old else 1
        token = secrets.token_hex(3)
        name = f"{group_prefix(group)}-p{partition}-g{number}-{token}"
        config = api.ConsumerConfig(
            durable_name=name,
            description=f"plantbus consumer group {group!r}, partition {partition}",
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=offset + 1,
            ack_policy=api.AckPolicy.ALL,
            ack_wait=_ACK_WAIT_SECONDS,
            max_ack_pending=_MAX_ACK_PENDING,
            filter_subject=streams.partition_filter(self.stream, partition),
        )
        # A request that timed out may still have created the consumer. The
        # retries keep the name, and creating the same name with the same
        # configuration again returns the existing consumer, so no second
        # consumer of this generation appears.
        await streams.retrying(
            f"create consumer {name!r}",
            lambda: self._manager.add_consumer(
                self.stream, config, timeout=self.timeout
            ),
            self.retry_seconds,
        )
        if attach:
            position = offset if position is None else position
            attachment = _Attachment(name, partition, position=position, acked=offset)

            async def on_message(msg: Msg) -> None:
                self._on_message(attachment, msg)

            attachment.inbox = await self._nc.subscribe(
                self._nc.new_inbox(), cb=on_message
            )
            self._attached[(group, partition)] = attachment
        for generation in old:
            await self._delete(generation.name)

    async def _delete(self, name: str) -> None:
        with contextlib.suppress(NotFoundError):
            await self._manager.delete_consumer(self.stream, name)

    async def _detach(
        self, group: str, partition: int, attachment: _Attachment
    ) -> None:
        self._attached.pop((group, partition), None)
        if attachment.inbox is None:
            return
        try:
            await attachment.inbox.unsubscribe()
        except Exception as exc:  # a closed connection has no subscriptions
            logger.debug("Could not unsubscribe %s: %s", attachment.inbox.subject, exc)

    def _wants_pull(
        self, attachment: _Attachment, last_known: int, now: float, limit: int
    ) -> bool:
        if attachment.broken:
            return False
        if any(due <= now for due in attachment.naked.values()):
            return True
        if limit <= 0:
            return False
        # A partition that had nothing more is pulled again only once the
        # log has grown since.
        return not attachment.buffer and attachment.checked < last_known

    async def _pull(self, attachment: _Attachment, batch: int, last_known: int) -> None:
        attachment.expected = batch
        attachment.done = asyncio.get_running_loop().create_future()
        # With `no_wait` the server responds at once: the messages it has, then
        # a 404 (none) or 408 (fewer than requested) status. With `expires`
        # too, it would hold a request that finds no message until it expires.
        request = {"batch": batch, "no_wait": True}
        assert attachment.inbox is not None
        await request_next(
            self._nc, self.stream, attachment.name, request, attachment.inbox.subject
        )
        try:
            status = await asyncio.wait_for(attachment.done, self.timeout)
        except TimeoutError:
            # Messages still on their way land in the buffer when they arrive.
            status = "timeout"
        attachment.done = None
        attachment.status = status
        if status in ("404", "408"):
            attachment.checked = last_known
        elif status in ("409", "timeout"):
            # The server sends no response to a pull for a deleted consumer.
            attachment.deleted = await self._is_deleted(attachment.name)

    def _on_message(self, attachment: _Attachment, msg: Msg) -> None:
        headers = msg.headers
        done = attachment.done
        if headers and not msg.data and (status := headers.get("Status")):
            if done is not None and not done.done():
                done.set_result(status)
            return
        if attachment.broken:
            return
        reply = msg.reply or ""
        seq, consumer_seq, stored_at = _sequences(reply)
        if consumer_seq != attachment.consumer_seq + 1:
            attachment.broken = True
            if done is not None and not done.done():
                done.set_result("gap")
            return
        attachment.consumer_seq = consumer_seq
        if seq <= attachment.position:
            if attachment.naked.pop(seq, None) is not None:
                attachment.returned.append(
                    Record(seq, attachment.partition, msg.data, stored_at)
                )
            # Read again after a resync (or sent again after `ack_wait`):
            # keep the reply for acknowledging, hand nothing else out.
            delivered = attachment.delivered
            if seq > attachment.acked and (not delivered or delivered[-1][0] < seq):
                delivered.append((seq, reply))
        elif not attachment.buffer or seq > attachment.buffer[-1][0].offset:
            record = Record(seq, attachment.partition, msg.data, stored_at)
            attachment.buffer.append((record, reply))
        attachment.expected -= 1
        if attachment.expected <= 0 and done is not None and not done.done():
            done.set_result(None)

    def _take(self, attachments: list[_Attachment], limit: int) -> list[Record]:
        heads = [
            (a.buffer[0][0].offset, index)
            for index, a in enumerate(attachments)
            if a.buffer
        ]
        heapq.heapify(heads)
        # Records back from a delay were counted against the limit before.
        records = self._returned(attachments)
        limit += len(records)
        while heads and len(records) < limit:
            _, index = heapq.heappop(heads)
            attachment = attachments[index]
            record, reply = attachment.buffer.popleft()
            records.append(record)
            attachment.position = record.offset
            attachment.delivered.append((record.offset, reply))
            if attachment.buffer:
                heapq.heappush(heads, (attachment.buffer[0][0].offset, index))
            elif attachment.status not in ("404", "408"):
                # The partition may have more records, below those of the
                # other buffers: stop here to keep the page in offset order.
                break
        if records:
            self.last_seen = max(self.last_seen, records[-1].offset)
        return records

    def _returned(self, attachments: list[_Attachment]) -> list[Record]:
        returned: list[Record] = []
        for attachment in attachments:
            returned.extend(attachment.returned)
            attachment.returned.clear()
        return sorted(returned, key=lambda record: record.offset)

    async def _ack(
        self, group: str, attachment: _Attachment, seq: int, reply: str
    ) -> None:
        try:
            await self._nc.request(reply, b"+ACK", timeout=self.timeout)
        except NoRespondersError:
            if await self._is_deleted(attachment.name):
                attachment.deleted = True
                raise self._deleted_error(group, attachment.name) from None
            raise
        attachment.acked = max(attachment.acked, seq)
        while attachment.delivered and attachment.delivered[0][0] <= seq:
            attachment.delivered.popleft()

    async def _is_deleted(self, name: str) -> bool:
        try:
            await self._manager.consumer_info(self.stream, name, timeout=self.timeout)
        except NotFoundError:
            return True
        return False

    def _deleted_error(self, group: str, name: str) -> ConsumerGone:
        return ConsumerGone(
            f"The durable consumer {name!r} of consumer group {group!r} on stream "
            f"{self.stream!r} was deleted while this process read through it. "
            "Another worker took the partition over (this one lost its lease), "
            "or someone deleted the consumer. The group goes on from the "
            "floor of the newest generation left, or from the start of the "
            "partition if none is left."
        )
