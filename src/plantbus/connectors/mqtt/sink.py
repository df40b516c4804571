"""The MQTT sink: publish each event to a topic built from the event.

One connection serves every delivery of the sink; it opens at start and
again after it drops. A QoS 1 or 2 delivery returns once the broker has
acknowledged the message. MQTT has no idempotency key, so a crash between
the broker's acknowledgement and the pipeline's ledger entry publishes the
event again. Subscribers that need exactly once should drop repeated
CloudEvents ids, found in the payload or in the `id` user property in data
mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import string
from typing import Any

import aiomqtt
import orjson
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from plantbus.config.model import MqttBrokerConfig
from plantbus.connectors.base import Sink
from plantbus.connectors.mqtt.settings import make_client, tls_context
from plantbus.errors import ConfigError, PermanentDeliveryError, RetryableDeliveryError
from plantbus.events.envelope import Event

logger = logging.getLogger("plantbus.connectors.mqtt")

PLACEHOLDERS = ("type", "key", "subject", "source", "plant", "id")


class MqttSink(Sink):
    """Publish events to an MQTT broker over one shared connection."""

    def __init__(
        self,
        name: str,
        broker: MqttBrokerConfig,
        topic: str,
        *,
        client_id: str,
        qos: int = 1,
        retain: bool = False,
        payload: str = "cloudevents",
    ) -> None:
        self.name = name
        self.broker = broker
        self.topic = topic
        self.client_id = broker.client_id or client_id
        self.qos = qos
        self.retain = retain
        self.payload = payload
        self._fields = topic_fields(name, topic)
        self._tls = tls_context(broker) if broker.tls is not None else None
        self._client: aiomqtt.Client | None = None
        self._connecting = asyncio.Lock()

    async def start(self) -> None:
        """Connect to the broker; when that fails, the first delivery tries again."""
        try:
            await self._connected()
        except RetryableDeliveryError as exc:
            logger.warning("MQTT sink %r: %s", self.name, exc)

    async def close(self) -> None:
        """Disconnect from the broker."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)
            logger.info("MQTT sink %r disconnected.", self.name)

    async def deliver(self, event: Event) -> str | None:
        """Publish one event; return None, since MQTT gives no reference."""
        topic = self.topic_for(event)
        body, properties = self._message(event)
        client = await self._connected()
        try:
            await client.publish(
                topic, body, qos=self.qos, retain=self.retain, properties=properties
            )
        except aiomqtt.MqttError as exc:
            await self._drop(client)
            raise RetryableDeliveryError(
                f"MQTT sink {self.name!r} could not publish event {event.id!r} to "
                f"{topic!r}: {exc}."
            ) from exc
        return None

    def topic_for(self, event: Event) -> str:
        """Fill the topic template from the event; raise when a value is unusable."""
        values = {
            "type": event.type,
            "key": event.key,
            "subject": event.subject,
            "source": event.source,
            "plant": event.plant,
            "id": event.id,
        }
        for name in self._fields:
            value = values[name]
            if not value:
                raise PermanentDeliveryError(
                    f"Event {event.id!r} has no `{name}` for the topic template "
                    f"{self.topic!r} of MQTT sink {self.name!r}; set it on the "
                    f"event or change `topic`."
                )
            if any(char in value for char in "+#\x00"):
                raise PermanentDeliveryError(
                    f"Event {event.id!r} `{name}` is {value!r}, which contains an "
                    f"MQTT wildcard or NUL and cannot be part of the topic "
                    f"{self.topic!r} of MQTT sink {self.name!r}."
                )
        return self.topic.format_map(values)

    def _message(self, event: Event) -> tuple[bytes, Properties | None]:
        version5 = self.broker.protocol == "5"
        properties = (
            Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if version5
            else None
        )
        if self.payload == "cloudevents":
            if properties is not None:
                properties.ContentType = "application/cloudevents+json"
            return event.to_json(), properties

        # Data mode is the CloudEvents MQTT binary mode: on MQTT 5 the
        # attributes travel as user properties; MQTT 3.1.1 has no place for them.
        if event.data_binary is not None:
            body = event.data_binary
        else:
            body = orjson.dumps(event.data)
        if properties is not None:
            attributes = event.to_dict()
            attributes.pop("data", None)
            attributes.pop("data_base64", None)
            content_type = attributes.pop("datacontenttype", None)
            if content_type:
                properties.ContentType = str(content_type)
            properties.UserProperty = [
                (
                    name,
                    value if isinstance(value, str) else orjson.dumps(value).decode(),
                )
                for name, value in attributes.items()
            ]
        return body, properties

    async def _connected(self) -> aiomqtt.Client:
        if self._client is not None:
            return self._client
        async with self._connecting:
            if self._client is not None:
                return self._client
            client = make_client(
                self.broker, self.client_id, persistent=False, tls=self._tls
            )
            try:
                await client.__aenter__()
            except aiomqtt.MqttError as exc:
                raise RetryableDeliveryError(
                    f"MQTT sink {self.name!r} cannot connect to "
                    f"{self.broker.host}:{self.broker.port}: {exc}."
                ) from exc
            logger.info(
                "MQTT sink %r connected to %s:%d as %r.",
                self.name,
                self.broker.host,
                self.broker.port,
                self.client_id,
            )
            self._client = client
            return client

    async def _drop(self, client: aiomqtt.Client) -> None:
        async with self._connecting:
            if self._client is client:
                self._client = None
        with contextlib.suppress(aiomqtt.MqttError, RuntimeError):
            await client.__aexit__(None, None, None)

    def describe(self) -> dict[str, Any]:
        """Return what the dashboard and the report show about this sink."""
        return {
            "name": self.name,
            "kind": "mqtt",
            "broker": f"{self.broker.host}:{self.broker.port}",
            "topic": self.topic,
            "qos": self.qos,
        }


def topic_fields(sink: str, topic: str) -> list[str]:
    """Return the placeholders of a topic template; raise ConfigError when invalid."""
    fields = []
    try:
        parsed = list(string.Formatter().parse(topic))
    except ValueError as exc:
        raise ConfigError(
            f"MQTT sink {sink!r} option `topic` is {topic!r}: {exc}. Write "
            f"placeholders as {{type}}, and double braces for a literal brace."
        ) from exc
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in PLACEHOLDERS or spec or conversion:
            raise ConfigError(
                f"MQTT sink {sink!r} option `topic` is {topic!r}: the placeholder "
                f"{{{field}}} is unknown; use one of "
                + ", ".join(f"{{{name}}}" for name in PLACEHOLDERS)
                + "."
            )
        fields.append(field)
    if "\x00" in topic:
        # MQTT 5 section 4.7.3 forbids U+0000 in topic names.
        raise ConfigError(
            f"MQTT sink {sink!r} option `topic` is {topic!r}: it contains the "
            f"character U+0000, which MQTT does not allow in topics."
        )
    if "+" in topic or "#" in topic:
        raise ConfigError(
            f"MQTT sink {sink!r} option `topic` is {topic!r}: a topic to publish "
            f"to cannot contain the wildcards '+' or '#'."
        )
    return fields
