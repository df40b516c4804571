"""A hub file with an MQTT source and an MQTT sink, run against Mosquitto."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiomqtt
import orjson
import pytest
from mqtt_brokers import unique_topic

from plantbus.config.loader import load_hub
from plantbus.connectors.mqtt.sink import MqttSink
from plantbus.connectors.mqtt.source import MqttSource
from plantbus.errors import ConfigError
from plantbus.hub import build_hub

HUB_FILE = """
hub:
  name: mqtt-test-{suffix}
  data_dir: var
api:
  enabled: false
sources:
  - kind: mqtt
    name: shopfloor
    broker:
      port: {port}
      protocol: 5
      reconnect_initial_seconds: 0.1
    subscriptions:
      - filter: {prefix}/+/stopped
        qos: 1
        type: maintenance.machine.down.v1
        key: segments[2]
sinks:
  - kind: mqtt
    name: out
    broker:
      port: {port}
      protocol: "3.1.1"
    topic: {prefix}/out/{{type}}/{{key}}
    qos: 2
    payload: data
pipelines:
  - name: forward
    types: [maintenance.machine.*]
    steps:
      - deliver:
          to: [out]
"""


async def test_mqtt_hub_forwards_from_source_to_sink(
    tmp_path: Path, main_broker: int
) -> None:
    prefix = unique_topic()
    path = tmp_path / "hub.yaml"
    suffix = uuid.uuid4().hex[:8]
    path.write_text(HUB_FILE.format(port=main_broker, prefix=prefix, suffix=suffix))
    hub = await build_hub(load_hub(path))
    source = hub.sources[0]
    assert isinstance(source, MqttSource)
    assert source.client_id == f"plantbus-mqtt-test-{suffix}-shopfloor"
    assert isinstance(hub.sinks["out"], MqttSink)

    running = asyncio.create_task(hub.run())
    async with aiomqtt.Client("127.0.0.1", main_broker) as client:
        await client.subscribe(f"{prefix}/out/#", qos=2)
        await asyncio.wait_for(source.subscribed.wait(), 10)
        down = {"machine_id": "M-5", "since": "2026-03-02T06:00:00Z"}
        await client.publish(f"{prefix}/M-5/stopped", orjson.dumps(down), qos=1)
        message = await asyncio.wait_for(anext(client.messages), 10)
    hub.stop()
    await asyncio.wait_for(running, 10)

    assert message.topic.value == f"{prefix}/out/maintenance.machine.down.v1/M-5"
    assert isinstance(message.payload, bytes)
    assert orjson.loads(message.payload) == down


def test_mqtt_hub_json_subscription_needs_type(tmp_path: Path) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text(
        "sources:\n"
        "  - kind: mqtt\n"
        "    name: shopfloor\n"
        "    subscriptions:\n"
        "      - filter: plant1/+/telemetry\n"
    )
    with pytest.raises(ConfigError, match="needs an event `type`"):
        load_hub(path)


async def test_mqtt_hub_rejects_bad_topic_filter(tmp_path: Path) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text(
        "hub:\n  data_dir: var\n"
        "sources:\n"
        "  - kind: mqtt\n"
        "    name: shopfloor\n"
        "    subscriptions:\n"
        "      - filter: plant1/#/telemetry\n"
        "        type: maintenance.machine.down.v1\n"
    )
    with pytest.raises(ConfigError, match="filter 'plant1/#/telemetry' is invalid"):
        await build_hub(load_hub(path))
