"""MqttSource connections: failed appends, broker restarts, passwords and TLS."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import orjson
import pytest
from mqtt_brokers import (
    PrivateBroker,
    Recorder,
    RunSource,
    broker_settings,
    publish,
    unique_topic,
)

from plantbus.backbone.log import Appended
from plantbus.config.model import MqttBrokerConfig, MqttSubscriptionConfig
from plantbus.connectors.mqtt.settings import tls_context
from plantbus.connectors.mqtt.source import MqttSource
from plantbus.errors import BackboneError, ConfigError
from plantbus.events.envelope import Event

DOWN = "maintenance.machine.down.v1"


def _source(broker: MqttBrokerConfig, prefix: str) -> MqttSource:
    subscription = {"filter": f"{prefix}/+", "type": DOWN, "key_segment": 2}
    return MqttSource(
        "mqtt-test",
        broker,
        [MqttSubscriptionConfig.model_validate(subscription)],
        client_id=f"plantbus-test-{uuid.uuid4().hex[:10]}",
    )


def _messages(prefix: str, numbers: range) -> list[tuple[str, bytes]]:
    return [
        (
            f"{prefix}/M-{n}",
            orjson.dumps({"machine_id": f"M-{n}", "since": "2026-03-02T06:00:00Z"}),
        )
        for n in numbers
    ]


def _machines(recorder: Recorder) -> list[str]:
    return [event.data["machine_id"] for event in recorder.events]


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    broker = PrivateBroker(tmp_path, "allow_anonymous true")
    broker.start()
    yield broker
    broker.stop()


async def test_mqtt_source_redelivers_after_failed_append(
    main_broker: int, recorder: Recorder, run_source: RunSource
) -> None:
    prefix = unique_topic()
    source = _source(broker_settings(main_broker), prefix)
    failures = [BackboneError("disk full")]
    ingest = recorder.ingest

    async def failing_once(events: Sequence[Event]) -> list[Appended]:
        if failures:
            raise failures.pop()
        return await ingest(events)

    recorder.ingest = failing_once  # type: ignore[method-assign]
    async with run_source(source):
        await publish(main_broker, _messages(prefix, range(3)))
        await recorder.wait_for(events=3)

    assert failures == []
    assert sorted(_machines(recorder)) == ["M-0", "M-1", "M-2"]


async def test_mqtt_source_loses_nothing_over_broker_restart(
    private_broker: PrivateBroker, recorder: Recorder, run_source: RunSource
) -> None:
    prefix = unique_topic()
    source = _source(private_broker.settings(), prefix)
    async with run_source(source):
        await publish(private_broker.port, _messages(prefix, range(5)))
        await recorder.wait_for(events=5)

        private_broker.stop()
        await asyncio.sleep(0.3)
        assert not source.subscribed.is_set()
        private_broker.start()
        # Published as soon as the broker is back, whether or not the source
        # has reconnected yet: the persistent session keeps them.
        await publish(private_broker.port, _messages(prefix, range(5, 25)))
        await recorder.wait_for(events=25)

    # At least once: messages appended but not yet acknowledged when the
    # broker stopped come again, so json events may repeat but none is lost.
    assert set(_machines(recorder)) == {f"M-{n}" for n in range(25)}


async def test_mqtt_source_logs_in_with_password(
    tmp_path: Path, recorder: Recorder, run_source: RunSource
) -> None:
    passwords = tmp_path / "passwords"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwords), "plantbus", "s3cret"],
        check=True,
        capture_output=True,
    )
    broker = PrivateBroker(
        tmp_path, f"allow_anonymous false\npassword_file {passwords}"
    )
    broker.start()
    try:
        prefix = unique_topic()
        wrong = _source(broker.settings(username="plantbus", password="wrong"), prefix)
        async with run_source(wrong, wait=False):
            await asyncio.sleep(0.5)
            assert not wrong.subscribed.is_set()

        right = _source(broker.settings(username="plantbus", password="s3cret"), prefix)
        async with run_source(right):
            await publish(
                broker.port,
                _messages(prefix, range(2)),
                username="plantbus",
                password="s3cret",
            )
            await recorder.wait_for(events=2)
    finally:
        broker.stop()
    assert _machines(recorder) == ["M-0", "M-1"]


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """Create a CA and a server certificate for 127.0.0.1 with openssl."""
    ca_key, ca_cert = folder / "ca.key", folder / "ca.crt"
    key, request, cert = (
        folder / "server.key",
        folder / "server.csr",
        folder / "server.crt",
    )
    extensions = folder / "san.cnf"
    extensions.write_text("subjectAltName=IP:127.0.0.1\n")
    commands = [
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=plantbus test CA", "-keyout", ca_key, "-out", ca_cert],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-keyout", key, "-out", request],
        ["openssl", "x509", "-req", "-in", request, "-CA", ca_cert, "-CAkey", ca_key,
         "-CAcreateserial", "-days", "2", "-extfile", extensions, "-out", cert],
    ]  # fmt: skip
    for command in commands:
        subprocess.run([str(part) for part in command], check=True, capture_output=True)
    return ca_cert, cert, key


async def test_mqtt_source_connects_over_tls(
    tmp_path: Path, recorder: Recorder, run_source: RunSource
) -> None:
    ca_cert, cert, key = _certificates(tmp_path)
    broker = PrivateBroker(
        tmp_path,
        f"allow_anonymous true\ncafile {ca_cert}\ncertfile {cert}\nkeyfile {key}",
    )
    broker.start()
    try:
        prefix = unique_topic()
        settings = broker.settings(tls={"ca_file": str(ca_cert)})
        async with run_source(_source(settings, prefix)):
            await publish(
                broker.port,
                _messages(prefix, range(2)),
                tls_context=tls_context(settings),
            )
            await recorder.wait_for(events=2)

        # Without the CA the broker's certificate is not trusted.
        untrusted = _source(broker.settings(tls={}), prefix)
        async with run_source(untrusted, wait=False):
            await asyncio.sleep(0.5)
            assert not untrusted.subscribed.is_set()
    finally:
        broker.stop()
    assert _machines(recorder) == ["M-0", "M-1"]


def test_mqtt_source_rejects_missing_ca_file(tmp_path: Path) -> None:
    settings = broker_settings(tls={"ca_file": str(tmp_path / "missing.crt")})

    with pytest.raises(ConfigError, match="cannot load the TLS files"):
        _source(settings, unique_topic())
