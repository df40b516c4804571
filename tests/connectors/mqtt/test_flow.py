"""The MQTT client's own bound on waiting messages, against a private Mosquitto.

The first test records the broker behaviour that makes the bound necessary.
The others show that aiomqtt's plain client lets a burst pile up in memory,
and that PausingClient keeps it to `max_queued` without losing a message.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import aiomqtt
import orjson
import paho.mqtt.client as mqtt
import pytest
from mqtt_brokers import (
    PrivateBroker,
    Recorder,
    RunSource,
    broker_settings,
    private_broker,
    publish,
)
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from plantbus.config.model import MqttSubscriptionConfig
from plantbus.connectors.mqtt.flow import PausingClient
from plantbus.connectors.mqtt.settings import client_options
from plantbus.connectors.mqtt.source import MqttSource

WINDOW = 100
BURST = 3000
BROKER = f"""\
allow_anonymous true
max_queued_messages 1000000
max_inflight_messages {WINDOW}
"""


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    yield from private_broker(tmp_path, BROKER)


def publish_sync(port: int, topic: str, count: int) -> None:
    """Publish `count` QoS 1 messages and wait until the broker has them all."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [
            client.publish(topic, f"{n:06d}".encode() + b"x" * 200, qos=1)
            for n in range(count)
        ]
        for info in infos:
            info.wait_for_publish(30)
    finally:
        client.disconnect()
        client.loop_stop()


def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)


def test_mosquitto_overshoots_window_after_acks(
    broker: PrivateBroker,
) -> None:
    topic = f"flow/{uuid.uuid4().hex[:8]}"
    received: list[int] = []
    lock = threading.Lock()

    def on_message(
        client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage
    ) -> None:
        with lock:
            received.append(msg.mid)

    subscriber = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"flow-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    subscriber.manual_ack_set(True)
    subscriber.on_message = on_message
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.ReceiveMaximum = WINDOW
    subscriber.connect("127.0.0.1", broker.port, properties=properties)
    subscriber.subscribe(f"{topic}/#", qos=1)
    subscriber.loop_start()
    try:
        time.sleep(0.3)
        publish_sync(broker.port, f"{topic}/a", BURST)
        wait_until(lambda: len(received) >= WINDOW)
        time.sleep(0.5)
        # Nothing acknowledged: the broker keeps to the window.
        assert len(received) == WINDOW
        with lock:
            first = list(received[:10])
        for mid in first:
            subscriber.ack(mid, 1)
        wait_until(lambda: len(received) > WINDOW + 10)
        time.sleep(0.5)
        in_flight = len(received) - len(first)
    finally:
        subscriber.disconnect()
        subscriber.loop_stop()
    # 10 acknowledgements would allow 10 more messages; Mosquitto 2.0.11 sent
    # about a window for each. If this fails, the broker keeps to the window
    # now and flow.py's reason for pausing is history, not a bug to work around.
    assert in_flight > 5 * WINDOW, (
        f"{in_flight} messages unacknowledged after 10 acknowledgements"
    )


async def drain(
    client: aiomqtt.Client, total: int, seconds_per_batch: float
) -> tuple[list[bytes], int]:
    """Take batches of 20 like a slow source; return payloads and longest queue."""
    payloads: list[bytes] = []
    longest = 0
    messages = client.messages
    while len(payloads) < total:
        if isinstance(client, PausingClient):
            client.resume_reading()
        first = await asyncio.wait_for(anext(messages), 10)
        longest = max(longest, len(messages) + 1)
        batch = [first]
        while len(messages) and len(batch) < 20:
            batch.append(await anext(messages))
        await asyncio.sleep(seconds_per_batch)
        for message in batch:
            payloads.append(bytes(message.payload))  # type: ignore[arg-type]
            client._client.ack(message.mid, message.qos)
    return payloads, longest


def open_session(port: int, client_id: str, topic_filter: str) -> None:
    """Create a persistent session with a QoS 1 subscription, then disconnect."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
    )
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", port, clean_start=False, properties=properties)
    client.loop_start()
    try:
        client.subscribe(topic_filter, qos=1)[1]
        time.sleep(0.3)
    finally:
        client.disconnect()
        client.loop_stop()


async def burst_into(
    broker: PrivateBroker, make_client: Callable[[dict[str, object]], aiomqtt.Client]
) -> tuple[int, int]:
    """Drain a burst queued in a session; return messages read, longest queue.

    The burst waits in the broker before the client connects, so the broker's
    releases after each acknowledgement do not depend on a publisher's speed.
    """
    topic = f"flow/{uuid.uuid4().hex[:8]}"
    client_id = f"flow-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(open_session, broker.port, client_id, f"{topic}/#")
    await asyncio.to_thread(publish_sync, broker.port, f"{topic}/a", BURST)
    client = make_client(options(broker, client_id))
    client._client.manual_ack_set(True)
    async with client:
        await client.subscribe(f"{topic}/#", qos=1)
        if isinstance(client, PausingClient):
            client.start_flow_control()
        payloads, longest = await drain(client, BURST, 0.002)
    numbers = sorted(int(payload[:6]) for payload in payloads)
    assert numbers == list(range(BURST)), "a message was lost or came twice"
    return len(payloads), longest


def options(broker: PrivateBroker, client_id: str | None = None) -> dict[str, object]:
    return client_options(
        broker_settings(broker.port, protocol="5"),
        client_id or f"flow-{uuid.uuid4().hex[:8]}",
        persistent=client_id is not None,
        receive_maximum=WINDOW,
    )


async def test_plain_aiomqtt_client_queues_far_past_the_window(
    broker: PrivateBroker,
) -> None:
    received, longest = await burst_into(
        broker, lambda settings: aiomqtt.Client(**settings)
    )
    assert received == BURST
    # The control for the next test: without a bound of its own, the client
    # keeps many windows of messages in memory (2,240 in three runs).
    assert longest > 5 * WINDOW


async def test_pausing_client_keeps_its_queue_at_max_queued(
    broker: PrivateBroker,
) -> None:
    clients: list[PausingClient] = []

    def make_client(settings: dict[str, object]) -> PausingClient:
        clients.append(PausingClient(max_queued=WINDOW, **settings))
        return clients[-1]

    received, longest = await burst_into(broker, make_client)
    assert received == BURST
    assert clients[0].pauses > 0
    # One read may finish the packet in hand after the pause.
    assert longest <= WINDOW + 1


def test_pausing_client_needs_room_to_resume() -> None:
    with pytest.raises(ValueError, match="`max_queued` is 1"):
        PausingClient(max_queued=1, hostname="127.0.0.1")


async def test_source_reads_session_backlog_past_window(
    broker: PrivateBroker, recorder: Recorder, run_source: RunSource
) -> None:
    # A backlog of several windows waits in the session when the source
    # connects, and arrives before the SUBACK.
    prefix = f"flow/{uuid.uuid4().hex[:8]}"
    subscription = MqttSubscriptionConfig.model_validate(
        {"filter": f"{prefix}/+", "type": "maintenance.machine.down.v1"}
    )
    source = MqttSource(
        "flow-test",
        broker_settings(broker.port, protocol="5"),
        [subscription],
        client_id=f"flow-{uuid.uuid4().hex[:8]}",
        max_batch=5,
        receive_maximum=20,
    )
    async with run_source(source):
        pass
    body = orjson.dumps({"machine_id": "M-1", "since": "2026-03-02T06:00:00Z"})
    await publish(broker.port, [(f"{prefix}/M-1", body)] * 200)

    async with run_source(source):
        await recorder.wait_for(events=200, timeout=20)

    assert len(recorder.events) == 200


async def test_pausing_client_reads_again_for_keepalive(
    broker: PrivateBroker,
) -> None:
    # Half the broker's window, so the queue reaches it without any ack.
    client = PausingClient(
        max_queued=WINDOW // 2, **{**options(broker), "keepalive": 2}
    )
    topic = f"flow/{uuid.uuid4().hex[:8]}"
    client._client.manual_ack_set(True)
    async with client:
        await client.subscribe(f"{topic}/#", qos=1)
        client.start_flow_control()
        publisher = asyncio.create_task(
            asyncio.to_thread(publish_sync, broker.port, f"{topic}/a", BURST)
        )
        first = await asyncio.wait_for(anext(client.messages), 10)
        # The consumer stalls for several keepalive intervals while reading
        # is paused, and acknowledges nothing meanwhile.
        await asyncio.sleep(6)
        assert client.pauses >= 1
        client._client.ack(first.mid, first.qos)
        payloads, _ = await drain(client, BURST - 1, 0.0)
        await publisher

    assert len(payloads) == BURST - 1
