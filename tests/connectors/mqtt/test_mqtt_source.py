"""MqttSource against the machine's Mosquitto: QoS, sessions, mapping, dead letters."""

from __future__ import annotations

import uuid

import orjson
import pytest
from mqtt_brokers import Recorder, RunSource, broker_settings, publish, unique_topic

from plantbus.config.model import MqttSubscriptionConfig
from plantbus.connectors.mqtt.source import MqttSource
from plantbus.events.envelope import Event

DOWN = "maintenance.machine.down.v1"
UP = "maintenance.machine.up.v1"


def _source(
    port: int, subscriptions: list[dict[str, object]], **broker: object
) -> MqttSource:
    return MqttSource(
        "mqtt-test",
        broker_settings(port, **broker),
        [MqttSubscriptionConfig.model_validate(s) for s in subscriptions],
        client_id=f"plantbus-test-{uuid.uuid4().hex[:10]}",
    )


def _down(machine: str, number: int = 0) -> bytes:
    return orjson.dumps(
        {"machine_id": machine, "since": f"2026-03-02T06:00:{number:02d}Z"}
    )


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
@pytest.mark.parametrize("qos", [0, 1, 2])
async def test_mqtt_source_ingests_json_at_each_qos(
    main_broker: int, recorder: Recorder, run_source: RunSource, protocol: str, qos: int
) -> None:
    prefix = unique_topic()
    source = _source(
        main_broker,
        [{"filter": f"{prefix}/+/state", "qos": qos, "type": DOWN, "key_segment": 2}],
        protocol=protocol,
    )
    async with run_source(source):
        await publish(
            main_broker,
            [(f"{prefix}/M-{n}/state", _down(f"M-{n}", n)) for n in range(3)],
            qos=qos,
            protocol=protocol,
        )
        await recorder.wait_for(events=3)

    assert [e.data["machine_id"] for e in recorder.events] == ["M-0", "M-1", "M-2"]
    assert [e.partitionkey for e in recorder.events] == ["M-0", "M-1", "M-2"]
    assert {e.type for e in recorder.events} == {DOWN}
    assert recorder.events[0].subject == f"{prefix}/M-0/state"
    assert recorder.dead_letters == []


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_mqtt_source_keeps_qos1_messages_while_stopped(
    main_broker: int, recorder: Recorder, run_source: RunSource, protocol: str
) -> None:
    prefix = unique_topic()
    source = _source(
        main_broker,
        [
            {
                "filter": f"{prefix}/#",
                "qos": 1,
                "type": DOWN,
                "key": "payload.machine_id",
            }
        ],
        protocol=protocol,
    )
    async with run_source(source):
        await publish(main_broker, [(f"{prefix}/a", _down("M-0"))], protocol=protocol)
        await recorder.wait_for(events=1)

    # The source is stopped; the broker queues these for its session.
    await publish(
        main_broker,
        [(f"{prefix}/a", _down(f"M-{n}", n)) for n in range(1, 21)],
        protocol=protocol,
    )
    async with run_source(source):
        await recorder.wait_for(events=21)
        await publish(main_broker, [(f"{prefix}/a", _down("M-21"))], protocol=protocol)
        await recorder.wait_for(events=22)

    machines = [e.data["machine_id"] for e in recorder.events]
    assert machines == [f"M-{n}" for n in range(22)]


async def test_mqtt_source_maps_wildcards_to_types_and_keys(
    main_broker: int, recorder: Recorder, run_source: RunSource
) -> None:
    prefix = unique_topic()
    source = _source(
        main_broker,
        [
            {"filter": f"{prefix}/+/stopped", "type": DOWN, "key": "segments[2]"},
            {
                "filter": f"{prefix}/started/#",
                "type": UP,
                "key": "payload.machine_id",
                "data": '{"machine_id": payload.machine_id, "since": payload.at}',
            },
        ],
    )
    async with run_source(source):
        await publish(
            main_broker,
            [
                (f"{prefix}/L1-M3/stopped", _down("L1-M3")),
                (
                    f"{prefix}/started/line1/x",
                    orjson.dumps({"machine_id": "L1-M4", "at": "2026-03-02T07:00:00Z"}),
                ),
            ],
        )
        await recorder.wait_for(events=2)

    down, up = recorder.events
    assert (down.type, down.partitionkey) == (DOWN, "L1-M3")
    assert (up.type, up.partitionkey) == (UP, "L1-M4")
    assert up.data == {"machine_id": "L1-M4", "since": "2026-03-02T07:00:00Z"}


async def test_mqtt_source_dead_letters_bad_payloads(
    main_broker: int, recorder: Recorder, run_source: RunSource
) -> None:
    prefix = unique_topic()
    subscription = {"filter": f"{prefix}/#", "type": DOWN, "key_segment": 2}
    source = _source(main_broker, [subscription])
    not_json = b"{machine_id: M-1"
    no_since = orjson.dumps({"machine_id": "M-2"})
    async with run_source(source):
        await publish(
            main_broker,
            [
                (f"{prefix}/M-1", not_json),
                (f"{prefix}/M-2", no_since),
                (f"{prefix}/M-3", _down("M-3")),
            ],
        )
        await recorder.wait_for(events=1, letters=2)

    assert [e.data["machine_id"] for e in recorder.events] == ["M-3"]
    letters = {letter.headers["mqtt-topic"]: letter for letter in recorder.dead_letters}
    assert letters[f"{prefix}/M-1"].payload == not_json
    assert "not valid JSON" in letters[f"{prefix}/M-1"].error
    assert letters[f"{prefix}/M-2"].payload == no_since
    assert "since" in letters[f"{prefix}/M-2"].error
    assert letters[f"{prefix}/M-2"].stage == "ingest"
    assert letters[f"{prefix}/M-2"].headers["mqtt-qos"] == "1"

    # Rejected messages were acknowledged, so a new session start gets nothing.
    async with run_source(source):
        await publish(main_broker, [(f"{prefix}/M-4", _down("M-4"))])
        await recorder.wait_for(events=2)
    assert len(recorder.dead_letters) == 2


async def test_mqtt_source_keeps_cloudevent_ids(
    main_broker: int, recorder: Recorder, run_source: RunSource
) -> None:
    prefix = unique_topic()
    source = _source(main_broker, [{"filter": f"{prefix}/ce", "format": "cloudevents"}])
    event = Event.create(
        DOWN,
        "urn:test",
        {"machine_id": "M-9", "since": "2026-03-02T06:00:00Z"},
        partitionkey="M-9",
    )
    async with run_source(source):
        await publish(main_broker, [(f"{prefix}/ce", event.to_json())] * 2)
        await publish(main_broker, [(f"{prefix}/ce", b'{"specversion": "1.0"}')])
        await recorder.wait_for(events=1, letters=1)

    assert [e.id for e in recorder.events] == [event.id]
    assert recorder.dead_letters[0].payload == b'{"specversion": "1.0"}'
    assert recorder.dead_letters[0].content_type == "application/cloudevents+json"
