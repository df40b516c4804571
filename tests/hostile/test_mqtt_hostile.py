"""Hostile MQTT payloads: each becomes a dead letter with its bytes, the stream goes on.

Every test runs a private Mosquitto on a free loopback port. After each bad
message a good one follows, which must arrive, so that a message that the
source cannot handle never blocks the ones behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from plantbus.backbone.sqlite import SqliteLog
from plantbus.config.model import MqttSubscriptionConfig
from plantbus.connectors.mqtt.source import MqttSource

sys.path.insert(0, str(Path(__file__).parents[1] / "connectors" / "mqtt"))
from mqtt_brokers import PrivateBroker, Recorder, publish

DOWN = "maintenance.machine.down.v1"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    running = PrivateBroker(tmp_path, "allow_anonymous true")
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
async def recorder(tmp_path: Path) -> AsyncIterator[Recorder]:
    log = SqliteLog(tmp_path / "log.sqlite", partitions=4)
    await log.start()
    yield Recorder(log)
    await log.close()


@contextlib.asynccontextmanager
async def running(source: MqttSource, recorder: Recorder) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(recorder.ingest, recorder.reject, stop))
    try:
        await asyncio.wait_for(source.subscribed.wait(), 10)
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def make_source(broker: PrivateBroker, *subscriptions: dict[str, Any]) -> MqttSource:
    return MqttSource(
        "hostile",
        broker.settings(),
        [MqttSubscriptionConfig.model_validate(s) for s in subscriptions],
        client_id=f"plantbus-hostile-{uuid.uuid4().hex[:10]}",
    )


def good(machine: str) -> bytes:
    return orjson.dumps({"machine_id": machine, "since": "2026-03-02T06:00:00Z"})


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


BAD_JSON_PAYLOADS = {
    "not utf-8": b'{"machine_id": "M\xff\xfe", "since": "2026-03-02T06:00:00Z"}',
    "binary": bytes(range(256)) * 64,
    "too deep for the parser": b"[" * 100_000 + b"]" * 100_000,
    "deep data": b'{"machine_id": "M-1", "since": "2026-03-02T06:00:00Z", "x": '
    + nested(900)
    + b"}",
    "huge": b'{"machine_id": "' + b"M" * 8_000_000 + b'"}',
    "list": b"[1, 2, 3]",
    "string": b'"stopped"',
    "empty": b"",
}


@pytest.mark.parametrize("case", list(BAD_JSON_PAYLOADS))
async def test_mqtt_hostile_json_payload_becomes_dead_letter(
    broker: PrivateBroker, recorder: Recorder, case: str
) -> None:
    prefix = f"hostile/{uuid.uuid4().hex[:8]}"
    source = make_source(
        broker, {"filter": f"{prefix}/+/down", "type": DOWN, "key_segment": 2}
    )
    payload = BAD_JSON_PAYLOADS[case]

    async with running(source, recorder):
        await publish(
            broker.port,
            [(f"{prefix}/M-1/down", payload), (f"{prefix}/M-2/down", good("M-2"))],
        )
        await recorder.wait_for(events=1, letters=1, timeout=30)

    assert [event.data["machine_id"] for event in recorder.events] == ["M-2"]
    letter = recorder.dead_letters[0]
    assert letter.payload == payload
    assert letter.headers["mqtt-topic"] == f"{prefix}/M-1/down"
    assert len(letter.error) < 2000


ODD_TOPICS = [
    "M 1",
    "Mäschine-ü",
    "$M",
    "M\u200b1",
    "M" * 1000,
]


async def test_mqtt_hostile_topic_levels_keep_stream_going(
    broker: PrivateBroker, recorder: Recorder
) -> None:
    prefix = f"hostile/{uuid.uuid4().hex[:8]}"
    source = make_source(
        broker,
        {"filter": f"{prefix}/#", "type": DOWN, "key": "segments[2]"},
    )
    # The schema allows machine ids of at most 128 characters.
    messages = [(f"{prefix}/{level}/down", good(level[:128])) for level in ODD_TOPICS]
    # An empty level yields an empty key, which is rejected.
    messages.append((f"{prefix}//down", good("empty")))
    messages.append((f"{prefix}/M-last/down", good("M-last")))

    async with running(source, recorder):
        await publish(broker.port, messages)
        await recorder.wait_for(events=len(ODD_TOPICS) + 1, letters=1)

    keys = [event.partitionkey for event in recorder.events]
    assert keys == [*ODD_TOPICS, "M-last"]
    assert recorder.dead_letters[0].headers["mqtt-topic"] == f"{prefix}//down"


def sparkplug_birth() -> bytes:
    from plantbus.formats.sparkplug.payload import DATA_TYPES, Payload

    payload = Payload(timestamp=1_772_431_200_000, seq=0)
    metric = payload.metrics.add()
    metric.name = "bdSeq"
    metric.datatype = DATA_TYPES["UInt64"]
    metric.long_value = 0
    return bytes(payload.SerializeToString())


async def test_mqtt_hostile_truncated_sparkplug_becomes_dead_letter(
    broker: PrivateBroker, recorder: Recorder
) -> None:
    group = f"G{uuid.uuid4().hex[:8]}"
    source = make_source(
        broker, {"filter": f"spBv1.0/{group}/#", "format": "sparkplug"}
    )
    birth = sparkplug_birth()
    bad = {
        f"spBv1.0/{group}/NDATA/E1": birth[: len(birth) // 2],
        f"spBv1.0/{group}/NDATA/E2": b"\xff" * 64,
        f"spBv1.0/{group}/NBIRTH/E3": b"\x0a\xff\xff\xff\xff\x0f",
    }

    async with running(source, recorder):
        await publish(broker.port, list(bad.items()), qos=0)
        await recorder.wait_for(letters=len(bad), timeout=15)

    letters = {letter.headers["mqtt-topic"]: letter for letter in recorder.dead_letters}
    assert sorted(letters) == sorted(bad)
    for topic, payload in bad.items():
        assert letters[topic].payload == payload
        assert letters[topic].content_type == "application/vnd.sparkplug-b+protobuf"


def telemetry(machine: str, value: bytes) -> bytes:
    """Return a structured CloudEvent of telemetry with one metric of JSON `value`."""
    # Spliced as bytes, since orjson does not write more than 254 levels.
    event = orjson.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "urn:hostile",
            "type": "maintenance.machine.telemetry.v1",
            "data": {
                "machine_id": machine,
                "at": "2026-03-02T06:00:00Z",
                "metrics": [{"name": "t", "value": "V", "at": "2026-03-02T06:00:00Z"}],
            },
        }
    )
    return event.replace(b'"V"', value)


async def test_mqtt_hostile_deep_nesting_dead_letter(
    broker: PrivateBroker, recorder: Recorder
) -> None:
    """A metric value may be any JSON, but the log stores at most 254 levels."""
    prefix = f"hostile/{uuid.uuid4().hex[:8]}"
    source = make_source(broker, {"filter": f"{prefix}/#", "format": "cloudevents"})
    bad = telemetry("M-1", nested(300))

    async with running(source, recorder):
        await publish(
            broker.port,
            [(f"{prefix}/M-1", bad), (f"{prefix}/M-2", telemetry("M-2", b'"20.5"'))],
        )
        await recorder.wait_for(events=1, letters=1, timeout=15)

    assert [event.data["machine_id"] for event in recorder.events] == ["M-2"]
    assert recorder.dead_letters[0].payload == bad
    assert "Recursion limit" in recorder.dead_letters[0].error
