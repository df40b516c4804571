"""Sparkplug B through MqttSource and the machine's Mosquitto."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiomqtt
import pytest
from mqtt_brokers import Recorder, RunSource, broker_settings, publish

from plantbus.config.model import MqttSubscriptionConfig
from plantbus.connectors.mqtt.source import MqttSource
from plantbus.connectors.mqtt.sparkplug import SparkplugHandler
from plantbus.formats.sparkplug.payload import DATA_TYPES, Payload, decode_payload
from plantbus.formats.sparkplug.state import SparkplugState

TELEMETRY = "maintenance.machine.telemetry.v1"
DOWN = "maintenance.machine.down.v1"
UP = "maintenance.machine.up.v1"
T0 = 1_772_431_200_000  # 2026-03-02T06:00:00Z in milliseconds


@pytest.fixture
def group() -> str:
    return f"G{uuid.uuid4().hex[:10]}"


def _source(port: int, group: str, **options: Any) -> MqttSource:
    subscription = {"filter": f"spBv1.0/{group}/#", "format": "sparkplug", **options}
    return MqttSource(
        "sparkplug",
        broker_settings(port),
        [MqttSubscriptionConfig.model_validate(subscription)],
        client_id=f"plantbus-test-{uuid.uuid4().hex[:10]}",
    )


def _payload(seq: int | None, metrics: list[dict[str, Any]], at: int = T0) -> bytes:
    payload = Payload(timestamp=at)
    if seq is not None:
        payload.seq = seq
    for metric in metrics:
        added = payload.metrics.add()
        for name, value in metric.items():
            if name == "unit":
                added.properties.keys.append("engUnit")
                added.properties.values.add(
                    type=DATA_TYPES["String"], string_value=value
                )
            else:
                setattr(added, name, value)
    return bytes(payload.SerializeToString())


def _double(name: str | None, alias: int, value: float) -> dict[str, Any]:
    metric: dict[str, Any] = {"alias": alias, "datatype": DATA_TYPES["Double"]}
    if name:
        metric["name"] = name
    metric["double_value"] = value
    return metric


def _bd_seq(value: int) -> dict[str, Any]:
    return {"name": "bdSeq", "datatype": DATA_TYPES["UInt64"], "long_value": value}


def _node_birth(bd_seq: int = 0) -> bytes:
    running = {"name": "Running", "alias": 2, "datatype": DATA_TYPES["Boolean"]}
    return _payload(
        0,
        [
            _bd_seq(bd_seq),
            {**_double("Temperature", 1, 20.5), "unit": "degC"},
            {**running, "boolean_value": True},
        ],
    )


async def test_sparkplug_birth_then_data_by_alias(
    main_broker: int, recorder: Recorder, run_source: RunSource, group: str
) -> None:
    base = f"spBv1.0/{group}"
    async with run_source(_source(main_broker, group)):
        await publish(
            main_broker,
            [
                (f"{base}/NBIRTH/Edge1", _node_birth()),
                (
                    f"{base}/DBIRTH/Edge1/Press7",
                    _payload(1, [_double("Spindle/Speed", 10, 1200.0)]),
                ),
                (
                    f"{base}/DDATA/Edge1/Press7",
                    _payload(2, [_double(None, 10, 1250.5)], at=T0 + 1000),
                ),
                (f"{base}/NDATA/Edge1", _payload(3, [_double(None, 1, 21.25)])),
            ],
        )
        await recorder.wait_for(events=4)

    node_birth, device_birth, device_data, node_data = recorder.events
    assert {e.type for e in recorder.events} == {TELEMETRY}
    assert node_birth.data["machine_id"] == "Edge1"
    assert [m["name"] for m in node_birth.data["metrics"]] == ["Temperature", "Running"]
    assert node_birth.data["metrics"][1]["value"] is True
    assert device_birth.partitionkey == "Press7"
    assert device_data.data == {
        "machine_id": "Press7",
        "metrics": [
            {
                "name": "Spindle/Speed",
                "value": "1250.5",
                "datatype": "Double",
                "at": "2026-03-02T06:00:01.000Z",
            }
        ],
        "at": "2026-03-02T06:00:01.000Z",
    }
    assert node_data.data["metrics"][0]["unit"] == "degC"
    assert node_data.data["metrics"][0]["value"] == "21.25"
    assert recorder.dead_letters == []


async def _watch_commands(port: int, topic: str, seen: list[bytes]) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(topic)
        seen.append(b"subscribed")
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            seen.append(message.payload)


async def _wait_until(condition: Any, timeout: float = 5) -> None:
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_sparkplug_seq_gap_requests_rebirth(
    main_broker: int, recorder: Recorder, run_source: RunSource, group: str
) -> None:
    base = f"spBv1.0/{group}"
    seen: list[bytes] = []
    watcher = asyncio.create_task(
        _watch_commands(main_broker, f"{base}/NCMD/Edge1", seen)
    )
    await _wait_until(lambda: seen == [b"subscribed"])
    try:
        async with run_source(_source(main_broker, group)):
            await publish(
                main_broker,
                [
                    (f"{base}/NBIRTH/Edge1", _node_birth()),
                    (f"{base}/NDATA/Edge1", _payload(1, [_double(None, 1, 21.0)])),
                ],
            )
            await recorder.wait_for(events=2)
            assert seen == [b"subscribed"]

            # seq 2 went missing.
            gap = _payload(3, [_double(None, 1, 22.0)])
            await publish(main_broker, [(f"{base}/NDATA/Edge1", gap)])
            await _wait_until(lambda: len(seen) == 2)
            await recorder.wait_for(events=3)
    finally:
        watcher.cancel()

    request = decode_payload(seen[1], "NCMD")
    assert [(m.name, m.boolean_value) for m in request.metrics] == [
        ("Node Control/Rebirth", True)
    ]
    # The data after the gap is still ingested.
    assert recorder.events[2].data["metrics"][0]["value"] == "22"


def _handler(group: str, interval: float) -> SparkplugHandler:
    config = MqttSubscriptionConfig.model_validate(
        {
            "filter": f"spBv1.0/{group}/#",
            "format": "sparkplug",
            "rebirth_interval_seconds": interval,
        }
    )
    return SparkplugHandler(config, "sparkplug", SparkplugState())


def test_sparkplug_rebirth_once_per_interval(group: str) -> None:
    base = f"spBv1.0/{group}"
    handler = _handler(group, interval=3600)
    handler.handle(f"{base}/NBIRTH/Edge1", _node_birth())

    first = handler.handle(f"{base}/NDATA/Edge1", _payload(5, [_double(None, 1, 1.0)]))
    second = handler.handle(f"{base}/NDATA/Edge1", _payload(9, [_double(None, 1, 2.0)]))
    # The limit is per edge node, so another node still gets its request.
    other = handler.handle(f"{base}/NDATA/Edge2", _payload(3, [_double(None, 1, 3.0)]))

    assert first.rebirth is not None
    assert first.rebirth[0] == f"{base}/NCMD/Edge1"
    assert second.rebirth is None
    assert second.events
    assert other.rebirth is not None
    assert other.rebirth[0] == f"{base}/NCMD/Edge2"


def test_sparkplug_rebirth_zero_interval_repeats(group: str) -> None:
    base = f"spBv1.0/{group}"
    handler = _handler(group, interval=0)
    handler.handle(f"{base}/NBIRTH/Edge1", _node_birth())

    first = handler.handle(f"{base}/NDATA/Edge1", _payload(5, [_double(None, 1, 1.0)]))
    second = handler.handle(f"{base}/NDATA/Edge1", _payload(9, [_double(None, 1, 2.0)]))

    assert first.rebirth is not None
    assert second.rebirth is not None


async def test_sparkplug_unknown_alias_is_dead_letter(
    main_broker: int, recorder: Recorder, run_source: RunSource, group: str
) -> None:
    base = f"spBv1.0/{group}"
    data = _payload(5, [_double(None, 99, 1.0)])
    async with run_source(_source(main_broker, group)):
        await publish(main_broker, [(f"{base}/NDATA/Edge9", data)])
        await recorder.wait_for(letters=1)

    letter = recorder.dead_letters[0]
    assert letter.payload == data
    assert "aliases [99]" in letter.error
    assert letter.content_type == "application/vnd.sparkplug-b+protobuf"


async def test_sparkplug_ndeath_marks_machines_down(
    main_broker: int, recorder: Recorder, run_source: RunSource, group: str
) -> None:
    base = f"spBv1.0/{group}"
    async with run_source(_source(main_broker, group)):
        await publish(
            main_broker,
            [
                (f"{base}/NBIRTH/Edge1", _node_birth(bd_seq=5)),
                (
                    f"{base}/DBIRTH/Edge1/Press7",
                    _payload(1, [_double("Load", 20, 0.5)]),
                ),
                # A late death certificate of an older session changes nothing.
                (f"{base}/NDEATH/Edge1", _payload(None, [_bd_seq(4)])),
                (f"{base}/NDEATH/Edge1", _payload(None, [_bd_seq(5)], at=T0 + 5000)),
                (f"{base}/NBIRTH/Edge1", _node_birth(bd_seq=6)),
            ],
        )
        await recorder.wait_for(events=6)

    kinds = [(e.type, e.data["machine_id"]) for e in recorder.events]
    assert kinds == [
        (TELEMETRY, "Edge1"),
        (TELEMETRY, "Press7"),
        (DOWN, "Edge1"),
        (DOWN, "Press7"),
        (UP, "Edge1"),
        (TELEMETRY, "Edge1"),
    ]
    down = recorder.events[2]
    assert down.data["since"] == "2026-03-02T06:00:05.000Z"
    assert down.data["reason_code"] == "SPARKPLUG_NDEATH"


async def test_sparkplug_state_metric_gives_down_and_up(
    main_broker: int, recorder: Recorder, run_source: RunSource, group: str
) -> None:
    base = f"spBv1.0/{group}"
    running = {"alias": 2, "datatype": DATA_TYPES["Boolean"]}
    source = _source(main_broker, group, state_metric="Running")
    async with run_source(source):
        await publish(
            main_broker,
            [
                (f"{base}/NBIRTH/Edge1", _node_birth()),
                (
                    f"{base}/NDATA/Edge1",
                    _payload(1, [{**running, "boolean_value": False}]),
                ),
                (
                    f"{base}/NDATA/Edge1",
                    _payload(2, [{**running, "boolean_value": False}]),
                ),
                (
                    f"{base}/NDATA/Edge1",
                    _payload(3, [{**running, "boolean_value": True}]),
                ),
            ],
        )
        await recorder.wait_for(events=6)

    kinds = [e.type for e in recorder.events]
    assert kinds == [TELEMETRY, TELEMETRY, DOWN, TELEMETRY, TELEMETRY, UP]


async def test_sparkplug_redelivered_message_keeps_event_ids(
    main_broker: int, recorder: Recorder, run_source: RunSource, group: str
) -> None:
    base = f"spBv1.0/{group}"
    birth = _node_birth()
    marker = _payload(1, [_double(None, 1, 30.0)])
    source = _source(main_broker, group, request_rebirth=False)
    async with run_source(source):
        await publish(main_broker, [(f"{base}/NBIRTH/Edge1", birth)] * 2)
        await publish(main_broker, [(f"{base}/NDATA/Edge1", marker)])
        await recorder.wait_for(events=2)

    # The second copy of the birth gave the same event id, so the log dropped
    # it. The data message came after both copies, so both were handled.
    assert [e.data["metrics"][0]["name"] for e in recorder.events] == [
        "Temperature",
        "Temperature",
    ]
    assert recorder.events[1].data["metrics"][0]["value"] == "30"
