"""The MQTT source: subscribe to topic filters and append each message as events.

Delivery guarantee: the source connects with a fixed client id and a
persistent session (clean start off, and a session expiry on MQTT 5), so the
broker queues QoS 1 and 2 messages while plantbus is away. A QoS 1 message is
acknowledged (PUBACK) only after its events are durably in the log or its
dead letter is stored. A crash in between makes the broker send the message
again, so delivery is at least once. Events parsed from a structured
CloudEvent keep their id, and Sparkplug events derive theirs from the
message bytes, so the log drops those repeats. A json message gets new event
ids each time it arrives.

NOTE: for QoS 2, paho-mqtt 2.2 sends PUBREC as soon as a message arrives and
keeps the message in memory until the broker's PUBREL. The source holds back
only the final PUBCOMP until the append. A crash between PUBREC and the
append loses that message, so QoS 1 is the safer subscription level. After
such a crash paho sends no PUBCOMP for the broker's repeated PUBREL, because
its in-memory state no longer has the message id. The broker then keeps
waiting for it in this session (read from the paho code, not tested).

Messages are taken from the client in batches of up to `max_batch` and
appended in one transaction, so one fsync covers many messages. At most about
`receive_maximum` messages wait in memory: the client pauses reading its
socket beyond that (flow.py explains why the broker's own limit is not
enough), and the source reads again as soon as it has appended half of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import aiomqtt

from plantbus.config.model import MqttBrokerConfig, MqttSubscriptionConfig
from plantbus.connectors.base import Ingest, Reject, Source
from plantbus.connectors.mqtt.flow import PausingClient
from plantbus.connectors.mqtt.messages import (
    Subscription,
    cloudevents_event,
    dead_letter,
    json_event,
)
from plantbus.connectors.mqtt.settings import Backoff, client_options, tls_context
from plantbus.connectors.mqtt.sparkplug import SparkplugHandler
from plantbus.errors import BatchRejected, EventError, FormatError
from plantbus.events.envelope import Event
from plantbus.formats.sparkplug.state import SparkplugState
from plantbus.state.dead_letters import DeadLetter

logger = logging.getLogger("plantbus.connectors.mqtt")

_CONTENT_TYPES = {
    "json": "application/json",
    "cloudevents": "application/cloudevents+json",
    "sparkplug": "application/vnd.sparkplug-b+protobuf",
}


class _Rejected(Exception):
    """A message that cannot become events, with what to store about it."""

    def __init__(self, error: str, problems: list[dict[str, Any]]) -> None:
        super().__init__(error)
        self.problems = problems


class MqttSource(Source):
    """Subscribe to an MQTT broker and append what arrives to the log."""

    def __init__(
        self,
        name: str,
        broker: MqttBrokerConfig,
        subscriptions: Sequence[MqttSubscriptionConfig],
        *,
        client_id: str,
        max_batch: int = 500,
        receive_maximum: int = 1000,
    ) -> None:
        self.name = name
        self.broker = broker
        self.client_id = broker.client_id or client_id
        self.max_batch = max_batch
        self.receive_maximum = receive_maximum
        self.event_source = f"mqtt://{broker.host}:{broker.port}"
        self._tls = tls_context(broker) if broker.tls is not None else None
        self.subscriptions = [Subscription.compile(s, name) for s in subscriptions]
        self.sparkplug = SparkplugState()
        self._handlers = {
            id(s): SparkplugHandler(s.config, self.event_source, self.sparkplug)
            for s in self.subscriptions
            if s.config.format == "sparkplug"
        }
        # Set while subscribed; tests and the hub can wait for it.
        self.subscribed = asyncio.Event()

    async def run(self, ingest: Ingest, reject: Reject, stop: asyncio.Event) -> None:
        """Receive messages until `stop` is set, reconnecting with backoff."""
        backoff = Backoff(
            self.broker.reconnect_initial_seconds, self.broker.reconnect_max_seconds
        )
        logger.info(
            "MQTT source %r connecting to %s:%d as %r.",
            self.name,
            self.broker.host,
            self.broker.port,
            self.client_id,
        )
        while not stop.is_set():
            try:
                await self._session(ingest, reject, stop, backoff)
            except aiomqtt.MqttError as exc:
                failure = f"connection failed or dropped: {exc}"
            except Exception as exc:
                # The batch in work was not acknowledged, so the broker sends
                # it again on the next connection.
                logger.exception("MQTT source %r failed on a batch.", self.name)
                failure = f"a batch failed: {exc}"
            else:
                break
            finally:
                self.subscribed.clear()
            if stop.is_set():
                break
            delay = backoff.next_delay()
            logger.warning(
                "MQTT source %r: %s; reconnecting in %.1f s (attempt %d).",
                self.name,
                failure,
                delay,
                backoff.attempts,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
        logger.info("MQTT source %r stopped.", self.name)

    async def _session(
        self, ingest: Ingest, reject: Reject, stop: asyncio.Event, backoff: Backoff
    ) -> None:
        client = PausingClient(
            max_queued=max(2, self.receive_maximum),
            **client_options(
                self.broker,
                self.client_id,
                persistent=True,
                receive_maximum=self.receive_maximum,
                tls=self._tls,
            ),
        )
        # NOTE: aiomqtt 2.5.1 has no manual acknowledgement API, so this uses
        # the paho-mqtt client inside it. Manual acks must be on before the
        # connect, because the broker sends queued messages right after it.
        client._client.manual_ack_set(True)
        async with client:
            for subscription in self.subscriptions:
                granted = await client.subscribe(
                    subscription.config.filter, qos=subscription.config.qos
                )
                _check_granted(granted, subscription.config.filter)
            backoff.reset()
            client.start_flow_control()
            self.subscribed.set()
            logger.info(
                "MQTT source %r subscribed to %s.",
                self.name,
                ", ".join(repr(s.config.filter) for s in self.subscriptions),
            )
            messages = client.messages
            while True:
                client.resume_reading()
                first = await _next_or_stop(messages, stop)
                if first is None:
                    return
                batch = [first]
                while len(messages) and len(batch) < self.max_batch:
                    batch.append(await anext(messages))
                await self._process(batch, client, ingest, reject)

    async def _process(
        self,
        batch: list[aiomqtt.Message],
        client: aiomqtt.Client,
        ingest: Ingest,
        reject: Reject,
    ) -> None:
        converted: list[tuple[aiomqtt.Message, list[Event]]] = []
        letters: list[DeadLetter] = []
        for message in batch:
            try:
                events = await self._convert(message, client)
            except _Rejected as exc:
                letters.append(self._letter(message, str(exc), exc.problems))
                continue
            converted.append((message, events))

        letters.extend(await self._append(converted, ingest))
        for letter in letters:
            await reject(letter)
        if letters:
            logger.warning(
                "MQTT source %r stored %d of %d messages as dead letters; the "
                "first: %s",
                self.name,
                len(letters),
                len(batch),
                letters[0].error,
            )

        # Acknowledge in arrival order, as MQTT requires, and only now that
        # every message is in the log or in the dead letters.
        for message in batch:
            if message.qos > 0:
                client._client.ack(message.mid, message.qos)

    def _subscription_for(self, topic: aiomqtt.Topic) -> Subscription | None:
        return next((s for s in self.subscriptions if s.matches(topic)), None)

    async def _convert(
        self, message: aiomqtt.Message, client: aiomqtt.Client
    ) -> list[Event]:
        subscription = self._subscription_for(message.topic)
        if subscription is None:
            raise _Rejected(
                f"No subscription of MQTT source {self.name!r} matches topic "
                f"{message.topic.value!r}; the broker may still hold a "
                f"subscription of an older hub file in this client's session.",
                [],
            )
        fmt = subscription.config.format
        try:
            if fmt == "json":
                return [json_event(message, subscription, self.event_source)]
            if fmt == "cloudevents":
                return [cloudevents_event(message)]
        except FormatError as exc:
            raise _Rejected(str(exc), _problems(exc)) from exc
        except EventError as exc:
            raise _Rejected(str(exc), _violations(exc)) from exc

        handler = self._handlers[id(subscription)]
        try:
            outcome = handler.handle(message.topic.value, _payload(message))
        except FormatError as exc:
            raise _Rejected(str(exc), _problems(exc)) from exc
        if outcome.rebirth is not None:
            await self._publish_rebirth(client, *outcome.rebirth)
        if outcome.error is not None:
            raise _Rejected(str(outcome.error), _problems(outcome.error))
        return outcome.events

    async def _publish_rebirth(
        self, client: aiomqtt.Client, topic: str, payload: bytes
    ) -> None:
        try:
            await client.publish(topic, payload, qos=0)
        except aiomqtt.MqttError as exc:
            logger.warning(
                "MQTT source %r failed to publish the rebirth request to %r: %s",
                self.name,
                topic,
                exc,
            )

    async def _append(
        self, converted: list[tuple[aiomqtt.Message, list[Event]]], ingest: Ingest
    ) -> list[DeadLetter]:
        """Append the events of all messages in one call; return dead letters."""
        letters: list[DeadLetter] = []
        while converted:
            owners = [
                index for index, (_, events) in enumerate(converted) for _ in events
            ]
            events = [event for _, batch in converted for event in batch]
            if not events:
                return letters
            try:
                await ingest(events)
                return letters
            except BatchRejected as exc:
                errors = exc.errors
            except EventError as exc:
                errors = [(0, exc)]

            # Take out each message that has an invalid event, then append
            # the rest again.
            bad: dict[int, EventError] = {}
            for index, error in errors:
                bad.setdefault(owners[index], error)
            for owner, error in bad.items():
                message = converted[owner][0]
                letters.append(self._letter(message, str(error), _violations(error)))
            converted = [item for i, item in enumerate(converted) if i not in bad]
        return letters

    def _letter(
        self, message: aiomqtt.Message, error: str, problems: list[dict[str, Any]]
    ) -> DeadLetter:
        subscription = self._subscription_for(message.topic)
        fmt = subscription.config.format if subscription else "json"
        return dead_letter(message, self.name, error, problems, _CONTENT_TYPES[fmt])


async def _next_or_stop(
    messages: aiomqtt.client.MessagesIterator, stop: asyncio.Event
) -> aiomqtt.Message | None:
    """Wait for the next message; return None once `stop` is set."""
    receiving = asyncio.ensure_future(anext(messages))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not receiving.done():
            receiving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiving
    if receiving.cancelled():
        return None
    return receiving.result()


def _check_granted(granted: Any, topic_filter: str) -> None:
    """Raise when the broker rejected a subscription (code 128 or a v5 failure)."""
    for code in granted:
        failed = code.is_failure if hasattr(code, "is_failure") else code >= 128
        if failed:
            raise aiomqtt.MqttError(
                f"the broker rejected the subscription to {topic_filter!r} "
                f"({code}); check the broker's access rules for this client"
            )


def _payload(message: aiomqtt.Message) -> bytes:
    payload = message.payload
    if isinstance(payload, (bytes, bytearray)):
        return bytes(payload)
    return str(payload).encode()


def _problems(error: FormatError) -> list[dict[str, Any]]:
    return [{"location": p.location, "message": p.message} for p in error.problems]


def _violations(error: EventError) -> list[dict[str, Any]]:
    return [
        {"location": v.path, "value": v.value, "message": v.rule}
        for v in error.violations
    ]
