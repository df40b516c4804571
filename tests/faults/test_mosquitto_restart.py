"""Mosquitto restarted in the middle of a QoS 1 stream into `plantbus run`.

A private mosquitto with persistence carries a steady stream of structured
CloudEvents from a paho publisher to a hub process, which posts each one to
the QMS reference server. The test stops the broker with SIGTERM (it saves
its persistence file) while messages flow, and starts it again on the same
port. The publisher and the hub both keep persistent sessions and reconnect.
Every message must reach the target once.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..connectors.mqtt.mqtt_brokers import PrivateBroker, private_broker
from .test_mqtt_burst import (
    BROKER,
    inspection_message,
    start_hub,
    wait_until_subscribed,
)
from .test_target_outage import TargetProcess

pytestmark = pytest.mark.slow

MESSAGES = 4000
# Messages per second that the publisher sends, so the stream spans the restart.
PACE = 1000
STOP_AFTER, DOWN_SECONDS = 1.5, 2.0


class SteadyPublisher(threading.Thread):
    """Publish messages at a steady pace over a persistent MQTT 5 session."""

    def __init__(self, port: int, messages: list[tuple[str, bytes, str]]) -> None:
        super().__init__(daemon=True)
        self.messages = messages
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"steady-publisher-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 1)
        session = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        session.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=False, properties=session)
        self.infos: list[mqtt.MQTTMessageInfo] = []
        # Message ids that the broker acknowledged with PUBACK. paho marks a
        # message published while disconnected as failed (MQTT_ERR_NO_CONN)
        # even though it sends it after reconnecting, so its wait_for_publish
        # cannot tell; the callback can.
        self.acknowledged: set[int] = set()
        self.client.on_publish = self._on_publish

    def _on_publish(
        self, client: mqtt.Client, userdata: object, mid: int, *rest: object
    ) -> None:
        self.acknowledged.add(mid)

    def run(self) -> None:
        self.client.loop_start()
        started = time.monotonic()
        for number, (topic, body, _) in enumerate(self.messages):
            # While the broker is down, paho queues QoS 1 messages and sends
            # them after it has reconnected.
            self.infos.append(self.client.publish(topic, body, qos=1))
            lead = number / PACE - (time.monotonic() - started)
            if lead > 0:
                time.sleep(lead)

    def wait_acknowledged(self, timeout: float) -> int:
        """Wait until the broker acknowledged every message; return how many did."""
        deadline = time.monotonic() + timeout
        wanted = {info.mid for info in self.infos}
        while not wanted <= self.acknowledged and time.monotonic() < deadline:
            time.sleep(0.05)
        self.client.disconnect()
        self.client.loop_stop()
        return len(wanted & self.acknowledged)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    yield from private_broker(tmp_path, BROKER)


@pytest.fixture
def qms(tmp_path: Path) -> Iterator[TargetProcess]:
    target = TargetProcess("qms", tmp_path)
    yield target
    target.process.stop()


def test_mosquitto_restart_loses_no_qos1_message(
    tmp_path: Path, broker: PrivateBroker, qms: TargetProcess
) -> None:
    hub, prefix, client_id = start_hub(
        tmp_path,
        "plantbus-restart",
        broker.port,
        qms.url,
        connections=8,
        max_in_flight=1000,
        cache_mib=64,
    )
    process = hub.process
    messages = [inspection_message(prefix, n) for n in range(MESSAGES)]
    try:
        wait_until_subscribed(hub)

        publisher = SteadyPublisher(broker.port, messages)
        publisher.start()
        time.sleep(STOP_AFTER)
        broker.stop()
        stopped_at = len(publisher.infos)
        time.sleep(DOWN_SECONDS)
        broker.start()
        publisher.join(60)
        acknowledged = publisher.wait_acknowledged(60)

        deadline = time.monotonic() + 60
        while (
            delivered := hub.metric("plantbus_deliveries_total", outcome="delivered")
        ) < MESSAGES:
            assert process.popen.poll() is None, process.text()[-3000:]
            assert time.monotonic() < deadline, f"{delivered} of {MESSAGES} delivered"
            time.sleep(0.2)
        # A late second delivery would still show up: wait a little longer.
        time.sleep(1.0)
    finally:
        output = process.stop()

    records = qms.records("/api/v2/nonconformances")
    ids = [record["source_event_id"] for record in records]
    mosquitto_log = (broker.folder / "mosquitto.log").read_text(errors="replace")
    print(
        f"{MESSAGES} messages, broker stopped after {stopped_at} were published "
        f"for {DOWN_SECONDS} s; {len(ids)} records"
    )

    assert process.popen.returncode == 0, output
    assert 0 < stopped_at < MESSAGES, "the restart was not in the middle of the stream"
    assert acknowledged == MESSAGES
    # The hub lost its connection and came back to its session.
    assert "reconnecting" in output
    assert mosquitto_log.count(f"as {client_id}") == 2, mosquitto_log
    assert len(ids) == MESSAGES
    assert set(ids) == {event_id for _, _, event_id in messages}
    assert len(set(ids)) == len(ids), "an event was delivered twice"
