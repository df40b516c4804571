"""Pipelined JetStream publishing with a bound on acknowledgements in flight.

A publish to a stream subject with a reply subject makes the stream reply
with a publish acknowledgement (stream sequence, duplicate flag) once the
message is stored, which in a cluster means stored by a quorum of replicas.
The publisher sends the messages of a batch one after the other without
waiting, keeps at most `max_in_flight` acknowledgements outstanding over all
callers, and matches each acknowledgement to its message by a token at the end
of the reply subject.

A message is sent again with the same `Nats-Msg-Id` when its acknowledgement
does not arrive within `ack_timeout` seconds, or when the server replies "no
responders" or a 503 error (no stream leader during an election). The stream
stores it at most once within its duplicate window.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from plantbus.errors import BackboneError

logger = logging.getLogger("plantbus.backbone")


@dataclass(frozen=True, slots=True)
class Ack:
    """The stream's acknowledgement of one published message."""

    seq: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish: subject, body and de-duplication id."""

    subject: str
    body: bytes
    msg_id: str


class _Retry(Exception):
    """An acknowledgement failed in a way that sending again can fix."""


class Publisher:
    """Send messages to a stream and collect their acknowledgements."""

    def __init__(
        self,
        nc: Client,
        stream: str,
        *,
        max_in_flight: int = 2000,
        ack_timeout: float = 5.0,
        publish_timeout: float = 60.0,
    ) -> None:
        self._nc = nc
        self.stream = stream
        self.ack_timeout = ack_timeout
        # Seconds after which an append gives up retrying and raises.
        self.publish_timeout = publish_timeout
        self._window = asyncio.Semaphore(max_in_flight)
        self._futures: dict[str, asyncio.Future[Ack]] = {}
        self._prefix = ""
        self._counter = 0
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        """Subscribe to the inbox that receives every acknowledgement."""
        self._prefix = self._nc.new_inbox() + "."
        self._subscription = await self._nc.subscribe(
            self._prefix + "*", cb=self._on_reply
        )

    async def close(self) -> None:
        """Stop receiving acknowledgements and fail the ones still awaited."""
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None
        for future in self._futures.values():
            if not future.done():
                future.set_exception(
                    BackboneError(
                        f"The connection to stream {self.stream!r} was closed while "
                        "an append waited for its acknowledgement; append again."
                    )
                )

    async def publish(self, messages: list[Outgoing]) -> list[Ack]:
        """Publish messages in order and return their acknowledgements in order."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.publish_timeout
        acks: list[Ack | None] = [None] * len(messages)
        todo = list(range(len(messages)))
        delay = 0.05

        while todo:
            futures = [await self._send(messages[i]) for i in todo]
            # Every future ends within ack_timeout of its send (see _send).
            await asyncio.wait(futures)

            failed: list[int] = []
            last_error: BaseException | None = None
            for index, future in zip(todo, futures, strict=True):
                if future.cancelled():
                    failed.append(index)
                elif (error := future.exception()) is not None:
                    if not isinstance(error, _Retry):
                        raise error
                    failed.append(index)
                    last_error = error
                else:
                    acks[index] = future.result()

            if not failed:
                break
            if loop.time() + delay > deadline:
                raise BackboneError(
                    f"Stream {self.stream!r} did not acknowledge {len(failed)} of "
                    f"{len(messages)} events within {self.publish_timeout} s (last "
                    f"error: {last_error}). Check that a majority of the stream's "
                    "servers is running; appending again is safe within the "
                    "duplicate window."
                )
            logger.warning(
                "Stream %s did not acknowledge %d of %d events (%s); sending them "
                "again in %.2f s",
                self.stream,
                len(failed),
                len(messages),
                last_error,
                delay,
            )
            # NOTE: an event sent again lands after the later events of its batch
            # that were stored on the first try, so a retry after a leader change
            # can put two events of one key out of append order.
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            todo = failed

        return [ack for ack in acks if ack is not None]

    async def _send(self, message: Outgoing) -> asyncio.Future[Ack]:
        await self._window.acquire()
        self._counter += 1
        token = str(self._counter)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Ack] = loop.create_future()
        self._futures[token] = future

        def expire() -> None:
            if not future.done():
                future.set_exception(
                    _Retry(f"no acknowledgement within {self.ack_timeout} s")
                )

        timer = loop.call_later(self.ack_timeout, expire)

        def release(_: asyncio.Future[Ack]) -> None:
            timer.cancel()
            self._futures.pop(token, None)
            self._window.release()

        future.add_done_callback(release)
        try:
            await self._nc.publish(
                message.subject,
                message.body,
                reply=self._prefix + token,
                headers={"Nats-Msg-Id": message.msg_id},
            )
        except Exception as exc:  # reconnecting or closed
            if not future.done():
                future.set_exception(_Retry(str(exc)))
        return future

    async def _on_reply(self, msg: Msg) -> None:
        token = msg.subject[len(self._prefix) :]
        future = self._futures.get(token)
        if future is None or future.done():
            return

        status = msg.headers.get("Status") if msg.headers else None
        if status == "503":
            future.set_exception(_Retry("no responders: the stream has no leader"))
            return
        try:
            response = json.loads(msg.data)
        except ValueError:
            future.set_exception(
                BackboneError(
                    f"Stream {self.stream!r} sent an acknowledgement that is not "
                    f"JSON: {msg.data[:200]!r}."
                )
            )
            return

        error = response.get("error")
        if error is None:
            future.set_result(
                Ack(seq=int(response["seq"]), duplicate=bool(response.get("duplicate")))
            )
        elif error.get("code") == 503:
            future.set_exception(_Retry(str(error.get("description", error))))
        else:
            future.set_exception(
                BackboneError(
                    f"Stream {self.stream!r} rejected an event: "
                    f"{error.get('description', error)} (error code "
                    f"{error.get('err_code')}). Check the stream's limits and that "
                    "no other stream claims its subjects."
                )
            )
