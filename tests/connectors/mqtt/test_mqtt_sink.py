"""MqttSink against the machine's Mosquitto: QoS, payload forms, one connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import orjson
import pytest
from mqtt_brokers import PrivateBroker, broker_settings, unique_topic

from plantbus.connectors.mqtt.sink import MqttSink
from plantbus.errors import ConfigError, PermanentDeliveryError, RetryableDeliveryError
from plantbus.events.envelope import Event


def _event(machine: str = "M-1") -> Event:
    return Event.create(
        "maintenance.machine.down.v1",
        "urn:test",
        {"machine_id": machine, "since": "2026-03-02T06:00:00Z"},
        partitionkey=machine,
    )


@contextlib.asynccontextmanager
async def _subscriber(
    port: int, topic_filter: str, protocol: str = "5"
) -> AsyncIterator[asyncio.Queue[aiomqtt.Message]]:
    version = (
        aiomqtt.ProtocolVersion.V5 if protocol == "5" else aiomqtt.ProtocolVersion.V311
    )
    received: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()
    async with aiomqtt.Client("127.0.0.1", port, protocol=version) as client:
        await client.subscribe(topic_filter, qos=2)

        async def collect() -> None:
            async for message in client.messages:
                await received.put(message)

        task = asyncio.create_task(collect())
        try:
            yield received
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
@pytest.mark.parametrize("qos", [0, 1, 2])
async def test_mqtt_sink_publishes_cloudevents_at_each_qos(
    main_broker: int, protocol: str, qos: int
) -> None:
    prefix = unique_topic()
    sink = MqttSink(
        "out",
        broker_settings(main_broker, protocol=protocol),
        f"{prefix}/{{type}}/{{key}}",
        client_id=f"sink-{prefix[-12:]}",
        qos=qos,
    )
    event = _event()
    async with _subscriber(main_broker, f"{prefix}/#", protocol) as received:
        await sink.start()
        assert await sink.deliver(event) is None
        message = await asyncio.wait_for(received.get(), 5)
        await sink.close()

    assert message.topic.value == f"{prefix}/maintenance.machine.down.v1/M-1"
    assert message.qos == qos
    assert isinstance(message.payload, bytes)
    assert Event.from_json(message.payload).to_dict() == event.to_dict()


async def test_mqtt_sink_sends_data_with_user_properties(main_broker: int) -> None:
    prefix = unique_topic()
    sink = MqttSink(
        "out",
        broker_settings(main_broker),
        f"{prefix}/{{key}}",
        client_id=f"sink-{prefix[-12:]}",
        payload="data",
    )
    event = _event("M-7")
    async with _subscriber(main_broker, f"{prefix}/#") as received:
        await sink.deliver(event)
        message = await asyncio.wait_for(received.get(), 5)
        await sink.close()

    assert isinstance(message.payload, bytes)
    assert orjson.loads(message.payload) == event.data
    assert message.properties is not None
    user = dict(message.properties.UserProperty)
    assert user["id"] == event.id
    assert user["type"] == "maintenance.machine.down.v1"
    assert user["specversion"] == "1.0"
    assert message.properties.ContentType == "application/json"


async def test_mqtt_sink_uses_one_connection(main_broker: int) -> None:
    prefix = unique_topic()
    sink = MqttSink(
        "out", broker_settings(main_broker), f"{prefix}/{{key}}", client_id="sink-one"
    )
    await sink.start()
    first = sink._client
    async with _subscriber(main_broker, f"{prefix}/#") as received:
        await asyncio.gather(*(sink.deliver(_event(f"M-{n}")) for n in range(20)))
        topics = {
            (await asyncio.wait_for(received.get(), 5)).topic.value for _ in range(20)
        }
    assert sink._client is first
    await sink.close()
    assert topics == {f"{prefix}/M-{n}" for n in range(20)}


async def test_mqtt_sink_reconnects_after_broker_restart(tmp_path: Path) -> None:
    broker = PrivateBroker(tmp_path, "allow_anonymous true")
    broker.start()
    prefix = unique_topic()
    sink = MqttSink("out", broker.settings(), f"{prefix}/{{key}}", client_id="sink-r")
    try:
        await sink.deliver(_event())
        broker.stop()
        with pytest.raises(RetryableDeliveryError):
            await sink.deliver(_event())
        broker.start()
        async with _subscriber(broker.port, f"{prefix}/#") as received:
            await sink.deliver(_event("M-2"))
            message = await asyncio.wait_for(received.get(), 5)
        assert message.topic.value == f"{prefix}/M-2"
    finally:
        await sink.close()
        broker.stop()


def test_mqtt_sink_rejects_unknown_topic_placeholder() -> None:
    with pytest.raises(ConfigError, match=r"\{machine\} is unknown"):
        MqttSink("out", broker_settings(), "plant/{machine}", client_id="x")
    with pytest.raises(ConfigError, match="wildcards"):
        MqttSink("out", broker_settings(), "plant/+/{type}", client_id="x")


def test_mqtt_sink_rejects_event_without_topic_value() -> None:
    sink = MqttSink("out", broker_settings(), "plant/{subject}", client_id="x")
    with pytest.raises(PermanentDeliveryError, match="no `subject`"):
        sink.topic_for(_event())
    wildcard = _event()
    wildcard.subject = "a/+/b"
    with pytest.raises(PermanentDeliveryError, match="wildcard"):
        sink.topic_for(wildcard)
