"""Scans of a JetStream stream through short-lived ephemeral consumers.

Reading, seeking by time, counting the lag and trimming all need the messages
of some subjects from a sequence or a time onwards. A JetStream consumer that
starts there and filters on the subjects delivers exactly those. The consumers
made here are ephemeral, stored in memory with one replica and without
acknowledgements, and the server deletes them by itself once they are unused
for `inactive_threshold` seconds, so a crashed process leaves nothing behind.

Each pull requests no more messages than the consumer reported as pending,
so a pull does not wait on the server for messages that do not exist. Only
after a purge can the count be too high, and then the pull ends after
`timeout` seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api
from nats.js.errors import NotFoundError
from nats.js.manager import JetStreamManager

from plantbus.errors import BackboneError

logger = logging.getLogger("plantbus.backbone")

# Maximum messages requested by one pull request.
_PULL_BATCH = 1000
# Pull requests sent while the server replies "no responders" (status 503).
_NEW_CONSUMER_ATTEMPTS = 5


def delivery_info(msg: Msg) -> tuple[int, int, float]:
    """Return stream sequence, pending count and store time of a delivered message.

    The values come from the reply subject, `$JS.ACK.<stream>.<consumer>.
    <delivered>.<stream seq>.<consumer seq>.<nanoseconds>.<pending>`, which has
    two more tokens in front (domain, account) and one at the end in the newer
    form. Parsing it here skips the datetime and dataclass objects that
    nats-py's `Msg.metadata` builds for every message.
    """
    tokens = (msg.reply or "").split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[8]), int(tokens[7]) / 1e9
    return int(tokens[7]), int(tokens[10]), int(tokens[9]) / 1e9


async def request_next(
    nc: Client, stream: str, consumer: str, request: dict[str, Any], inbox: str
) -> None:
    """Send a pull request; the messages and a closing status go to `inbox`."""
    await nc.publish(
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
        json.dumps(request).encode(),
        reply=inbox,
    )


class ScanLost(BackboneError):
    """The server no longer has the scan's consumer; open a new scan."""


class Scan:
    """One ephemeral pull consumer over a stream and the inbox it delivers to."""

    def __init__(
        self,
        nc: Client,
        manager: JetStreamManager,
        stream: str,
        name: str,
        pending: int,
        timeout: float,
    ) -> None:
        self._nc = nc
        self._manager = manager
        self.stream = stream
        self.name = name
        self._inbox: Subscription
        # Matching messages after the last one pulled, as the server last reported.
        self.pending = pending
        # Stream sequence of the last message pulled, 0 before the first pull.
        self.last_seq = 0
        self.timeout = timeout
        self._closed = False
        self._batch: list[Msg] = []
        self._requested = 0
        self._done: asyncio.Future[str | None] | None = None

    @classmethod
    async def open(
        cls,
        nc: Client,
        manager: JetStreamManager,
        stream: str,
        filter_subject: str,
        *,
        start_seq: int | None = None,
        start_time: datetime | None = None,
        headers_only: bool = False,
        inactive_threshold: float = 60.0,
        timeout: float = 5.0,
    ) -> Scan:
        """Create an ephemeral consumer that starts at a sequence or a time."""
        if start_seq is not None:
            policy = api.DeliverPolicy.BY_START_SEQUENCE
        elif start_time is not None:
            policy = api.DeliverPolicy.BY_START_TIME
        else:
            policy = api.DeliverPolicy.ALL
        config = api.ConsumerConfig(
            deliver_policy=policy,
            opt_start_seq=start_seq,
            opt_start_time=start_time,
            ack_policy=api.AckPolicy.NONE,
            filter_subject=filter_subject,
            headers_only=headers_only or None,
            inactive_threshold=inactive_threshold,
            mem_storage=True,
            num_replicas=1,
        )
        info = await manager.add_consumer(stream, config, timeout=timeout)
        assert info.name is not None
        scan = cls(nc, manager, stream, info.name, info.num_pending or 0, timeout)
        scan._inbox = await nc.subscribe(nc.new_inbox(), cb=scan._on_message)
        return scan

    async def pull(self, limit: int) -> list[Msg]:
        """Return up to `limit` messages; an empty list means nothing is pending."""
        if self.pending <= 0:
            await self.refresh()
        requested = min(limit, self.pending, _PULL_BATCH)
        if requested <= 0:
            return []

        # In a cluster a new consumer may not serve pulls for a moment, and the
        # request gets "no responders" (503). Nothing was delivered then, so
        # requesting again is safe. A consumer that stays unserved is lost.
        for attempt in range(_NEW_CONSUMER_ATTEMPTS):
            messages, status = await self._request(requested)
            if status != "503" or messages:
                break
            await asyncio.sleep(0.05 * (attempt + 1))

        if status == "503" or (status == "timeout" and len(messages) < requested):
            # Messages of this request may still arrive, and without
            # acknowledgements the consumer would not send them again.
            raise ScanLost(
                f"The scan consumer {self.name!r} of stream {self.stream!r} did not "
                f"deliver its messages (status {status})."
            )
        if messages:
            self.last_seq, self.pending, _ = delivery_info(messages[-1])
        if len(messages) < requested:
            # 404 or 408: fewer messages than counted, as after a purge.
            self.pending = 0
        return messages

    async def _request(self, requested: int) -> tuple[list[Msg], str | None]:
        self._batch = []
        self._requested = requested
        self._done = asyncio.get_running_loop().create_future()
        # The server drops the request after `expires` nanoseconds, so that a
        # lost reply cannot leave a request behind that swallows later messages.
        request = {"batch": requested, "expires": int(self.timeout * 1e9)}
        await request_next(
            self._nc, self.stream, self.name, request, self._inbox.subject
        )
        try:
            status = await asyncio.wait_for(self._done, self.timeout)
        except TimeoutError:
            status = "timeout"
        messages, self._batch, self._done = self._batch, [], None
        return messages, status

    async def _on_message(self, msg: Msg) -> None:
        done = self._done
        if done is None or done.done():
            return
        status = msg.headers.get("Status") if msg.headers else None
        if status is not None and not msg.data:
            done.set_result(status)
            return
        self._batch.append(msg)
        if len(self._batch) >= self._requested:
            done.set_result(None)

    async def refresh(self) -> None:
        """Read the count of pending messages from the server."""
        try:
            info = await self._manager.consumer_info(
                self.stream, self.name, timeout=self.timeout
            )
        except NotFoundError as exc:
            raise ScanLost(
                f"The scan consumer {self.name!r} of stream {self.stream!r} is gone "
                "from the server."
            ) from exc
        self.pending = info.num_pending or 0

    async def close(self) -> None:
        """Delete the consumer and its inbox; errors are logged, not raised."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._inbox.unsubscribe()
            await self._manager.delete_consumer(self.stream, self.name)
        except Exception as exc:  # the server deletes it anyway
            logger.debug(
                "Could not delete scan consumer %s of stream %s (the server drops "
                "it once inactive): %s",
                self.name,
                self.stream,
                exc,
            )


async def count_after(
    nc: Client,
    manager: JetStreamManager,
    stream: str,
    filter_subject: str,
    after: int,
    timeout: float,
) -> int:
    """Count the messages on `filter_subject` with a sequence above `after`."""
    scan = await Scan.open(
        nc, manager, stream, filter_subject, start_seq=after + 1, timeout=timeout
    )
    count = scan.pending
    await scan.close()
    return count


async def count_lag(
    nc: Client,
    manager: JetStreamManager,
    stream: str,
    offsets: dict[int, int],
    partitions: int,
    timeout: float,
) -> int:
    """Count the records after each partition's offset, over all partitions given."""
    # All partitions at one offset, as after a seek, need one count in total.
    # Otherwise each partition gets its own count, all run at once.
    # NOTE: each count creates and deletes a consumer, which in a cluster goes
    # through the meta leader, so lag suits a few calls a second.
    if len(offsets) == partitions and len(set(offsets.values())) == 1:
        filters = {f"{stream}.p.>": next(iter(offsets.values()))}
    else:
        filters = {f"{stream}.p.{p}.>": o for p, o in offsets.items()}
    counts = await asyncio.gather(
        *(
            count_after(nc, manager, stream, subject, after, timeout)
            for subject, after in filters.items()
        )
    )
    return sum(counts)


async def first_seq_at(
    nc: Client,
    manager: JetStreamManager,
    stream: str,
    filter_subject: str,
    moment: datetime,
    timeout: float,
) -> int | None:
    """Return the sequence of the first message stored at or after `moment`."""
    scan = await Scan.open(
        nc, manager, stream, filter_subject, start_time=moment, timeout=timeout
    )
    try:
        messages = await scan.pull(1)
    finally:
        await scan.close()
    return delivery_info(messages[0])[0] if messages else None


async def next_seq(
    manager: JetStreamManager, stream: str, filter_subject: str, after: int
) -> int | None:
    """Return the sequence of the first message on a subject after `after`."""
    try:
        message = await manager.get_msg(
            stream, seq=after + 1, subject=filter_subject, direct=True, next=True
        )
    except NotFoundError:
        return None
    return message.seq


async def sizes_from(
    nc: Client,
    manager: JetStreamManager,
    stream: str,
    filter_subject: str,
    timeout: float,
) -> list[tuple[int, int]]:
    """Return the sequence and body size of every message, oldest first."""
    scan = await Scan.open(
        nc, manager, stream, filter_subject, headers_only=True, timeout=timeout
    )
    sizes: list[tuple[int, int]] = []
    try:
        while batch := await scan.pull(_PULL_BATCH):
            for msg in batch:
                headers = msg.headers or {}
                seq = delivery_info(msg)[0]
                sizes.append((seq, int(headers.get("Nats-Msg-Size", 0))))
    finally:
        await scan.close()
    return sizes


async def purge_before(nc: Client, stream: str, seq: int, timeout: float) -> int:
    """Delete every message with a sequence below `seq`; return the count."""
    reply = await nc.request(
        f"$JS.API.STREAM.PURGE.{stream}",
        json.dumps({"seq": seq}).encode(),
        timeout=timeout,
    )
    response: dict[str, Any] = json.loads(reply.data)
    if "error" in response:
        raise BackboneError(
            f"Purging stream {stream!r} below sequence {seq} failed: "
            f"{response['error'].get('description', response['error'])}. Check "
            "that the stream exists and that this user may purge it."
        )
    return int(response.get("purged", 0))
