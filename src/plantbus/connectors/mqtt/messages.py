"""Turn MQTT messages into events by their subscription, and rejects into dead letters.

A json message becomes one event of the subscription's type. The JSONata
expressions for the partition key and the data see one object:
`{"topic": ..., "segments": [...], "payload": ..., "properties": {...}}`,
where `segments` is the topic split at "/" and `properties` contains the MQTT 5
properties of the message.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import aiomqtt
import orjson

from plantbus.config.model import MqttSubscriptionConfig
from plantbus.errors import ConfigError, FormatError, FormatProblem, MappingError
from plantbus.events.envelope import Event
from plantbus.pipeline.mapping import Expression, compile_expression
from plantbus.state.dead_letters import DeadLetter


@dataclass(frozen=True, slots=True)
class Subscription:
    """A subscription entry of the hub file with its expressions compiled."""

    config: MqttSubscriptionConfig
    wildcard: aiomqtt.Wildcard
    key: Expression | None
    data: Expression | None

    @classmethod
    def compile(cls, config: MqttSubscriptionConfig, source: str) -> Subscription:
        """Check the topic filter and compile the JSONata expressions."""
        wildcard = check_filter(config.filter, source)
        key = compile_expression(config.key) if config.key else None
        data = compile_expression(config.data) if config.data else None
        return cls(config, wildcard, key, data)

    def matches(self, topic: aiomqtt.Topic) -> bool:
        """Return True when the message's topic matches this filter."""
        return topic.matches(self.wildcard)


def check_filter(text: str, source: str) -> aiomqtt.Wildcard:
    """Return the topic filter as a wildcard; raise ConfigError when it is invalid."""
    # MQTT 5 section 4.7.3: a filter is UTF-8 without U+0000, at most 65535
    # bytes. Mosquitto drops the connection on a SUBSCRIBE that breaks this,
    # so the source would reconnect forever.
    rule = None
    if "\x00" in text:
        rule = "it contains the character U+0000, which MQTT does not allow"
    elif len(text.encode("utf-8", "surrogatepass")) > 65535:
        rule = "it is longer than the 65535 bytes that MQTT allows"
    if rule is not None:
        raise ConfigError(
            f"MQTT source {source!r} subscription filter {text[:80]!r} is "
            f"invalid: {rule}. Correct the `filter`."
        )
    try:
        return aiomqtt.Wildcard(text)
    except ValueError:
        raise ConfigError(
            f"MQTT source {source!r} subscription filter {text[:80]!r} is "
            f"invalid: a wildcard must fill a whole topic level. Use '+' for one "
            f"topic level and '#' as the last level only."
        ) from None


def properties_of(message: aiomqtt.Message) -> dict[str, Any]:
    """Return a message's MQTT 5 properties as plain JSON values."""
    properties = message.properties
    if properties is None:
        return {}
    document: dict[str, Any] = {}
    for name, value in properties.json().items():  # type: ignore[no-untyped-call]
        if isinstance(value, bytes):
            value = base64.b64encode(value).decode("ascii")
        document[name] = value
    return document


def content_type_of(message: aiomqtt.Message, default: str) -> str:
    """Return the MQTT 5 content type of a message, else `default`."""
    properties = message.properties
    content_type = getattr(properties, "ContentType", None) if properties else None
    return content_type if isinstance(content_type, str) else default


def json_event(
    message: aiomqtt.Message, subscription: Subscription, event_source: str
) -> Event:
    """Build the event of a json message; raise FormatError when it has none."""
    topic = message.topic.value
    payload = _parse_json(message, topic)
    context = {
        "topic": topic,
        "segments": topic.split("/"),
        "payload": payload,
        "properties": properties_of(message),
    }
    config = subscription.config
    key = _partition_key(subscription, context, topic)
    data = payload
    if subscription.data is not None:
        data = _evaluate(subscription.data, context, topic, "data")
    assert config.type is not None
    return Event.create(
        config.type, event_source, data, subject=topic, partitionkey=key
    )


def cloudevents_event(message: aiomqtt.Message) -> Event:
    """Parse a structured CloudEvent; raise EnvelopeError when it is not one."""
    return Event.from_json(message.payload)


def _parse_json(message: aiomqtt.Message, topic: str) -> Any:
    try:
        return orjson.loads(message.payload)
    except orjson.JSONDecodeError as exc:
        raise FormatError(
            topic,
            [
                FormatProblem(
                    "payload",
                    f"is not valid JSON ({exc}); the subscription "
                    f"{message.topic.value!r} has format json, so publish a JSON "
                    f"document or change the subscription's `format`.",
                )
            ],
        ) from exc


def _partition_key(
    subscription: Subscription, context: dict[str, Any], topic: str
) -> str | None:
    config = subscription.config
    if config.key_segment is not None:
        segments = context["segments"]
        if config.key_segment >= len(segments) or not segments[config.key_segment]:
            raise FormatError(
                topic,
                [
                    FormatProblem(
                        "topic",
                        f"has no segment {config.key_segment} for the partition "
                        f"key (`key_segment`); it has {len(segments)} segments.",
                    )
                ],
            )
        return str(segments[config.key_segment])
    if subscription.key is None:
        return None
    value = _evaluate(subscription.key, context, topic, "key")
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise FormatError(
            topic,
            [
                FormatProblem(
                    "key",
                    f"expression {subscription.key.source!r} gave {value!r}: "
                    f"expected a non-empty string or an integer for the "
                    f"partition key.",
                )
            ],
        )
    return str(value)


def _evaluate(
    expression: Expression, context: dict[str, Any], topic: str, what: str
) -> Any:
    try:
        return expression.evaluate(context)
    except MappingError as exc:
        raise FormatError(topic, [FormatProblem(what, str(exc))]) from exc


def dead_letter(
    message: aiomqtt.Message,
    source: str,
    error: str,
    problems: list[dict[str, Any]],
    default_content_type: str,
) -> DeadLetter:
    """Keep a rejected message whole: its bytes, topic, QoS and properties."""
    headers = {
        "mqtt-topic": message.topic.value,
        "mqtt-qos": str(message.qos),
        "mqtt-retain": str(message.retain).lower(),
    }
    for name, value in properties_of(message).items():
        headers[f"mqtt-{name}"] = (
            value if isinstance(value, str) else orjson.dumps(value).decode()
        )
    return DeadLetter(
        stage="ingest",
        error=error,
        payload=bytes(message.payload),
        source=source,
        content_type=content_type_of(message, default_content_type),
        headers=headers,
        details={"topic": message.topic.value, "problems": problems},
    )
