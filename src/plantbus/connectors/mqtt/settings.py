"""Broker connection settings shared by the MQTT source and sink."""

from __future__ import annotations

import random
import ssl
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from plantbus.config.model import MqttBrokerConfig
from plantbus.errors import ConfigError


def make_client(
    broker: MqttBrokerConfig,
    client_id: str,
    *,
    persistent: bool,
    tls: ssl.SSLContext | None = None,
) -> aiomqtt.Client:
    """Create an aiomqtt client; a persistent one resumes its session on connect."""
    return aiomqtt.Client(
        **client_options(broker, client_id, persistent=persistent, tls=tls)
    )


def client_options(
    broker: MqttBrokerConfig,
    client_id: str,
    *,
    persistent: bool,
    receive_maximum: int | None = None,
    tls: ssl.SSLContext | None = None,
) -> dict[str, Any]:
    """Return the keyword arguments of an aiomqtt client for a broker.

    `tls` is the context from `tls_context`, built once when the connector is
    created so that a bad certificate file stops the hub at start.
    """
    version5 = broker.protocol == "5"
    options: dict[str, Any] = {
        "hostname": broker.host,
        "port": broker.port,
        "identifier": client_id,
        "username": broker.username,
        "password": broker.password,
        "keepalive": broker.keepalive_seconds,
        "timeout": broker.timeout_seconds,
        "protocol": (
            aiomqtt.ProtocolVersion.V5 if version5 else aiomqtt.ProtocolVersion.V311
        ),
    }
    if version5:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if persistent:
            properties.SessionExpiryInterval = broker.session_expiry_seconds
        if receive_maximum is not None:
            properties.ReceiveMaximum = receive_maximum
        options["properties"] = properties
        # aiomqtt's default starts clean on the first connect, which would drop
        # what the broker queued while plantbus was stopped.
        options["clean_start"] = not persistent
    else:
        options["clean_session"] = not persistent
    if tls is not None:
        options["tls_context"] = tls
    return options


def resolve_paths(broker: MqttBrokerConfig, base_dir: Path) -> MqttBrokerConfig:
    """Return the settings with relative TLS file paths resolved against `base_dir`."""
    if broker.tls is None:
        return broker
    files = {
        name: base_dir / path
        for name in ("ca_file", "cert_file", "key_file")
        if (path := getattr(broker.tls, name)) is not None and not path.is_absolute()
    }
    return broker.model_copy(update={"tls": broker.tls.model_copy(update=files)})


def tls_context(broker: MqttBrokerConfig) -> ssl.SSLContext:
    """Build the TLS context from the `tls` block; raise ConfigError on bad files."""
    tls = broker.tls
    assert tls is not None
    try:
        context = ssl.create_default_context(
            cafile=str(tls.ca_file) if tls.ca_file else None
        )
        if tls.cert_file is not None and tls.key_file is not None:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"MQTT broker {broker.host!r}: cannot load the TLS files "
            f"(ca_file={str(tls.ca_file)!r}, cert_file={str(tls.cert_file)!r}, "
            f"key_file={str(tls.key_file)!r}): {exc}. Check the paths and that "
            f"the files are PEM."
        ) from exc
    if tls.insecure:
        # The chain is still checked against the CAs; only the name is not.
        context.check_hostname = False
    return context


class Backoff:
    """Exponential backoff with jitter for reconnects; reset after a good connect."""

    def __init__(self, initial: float, maximum: float, jitter: float = 0.2) -> None:
        self.initial = initial
        self.maximum = max(initial, maximum)
        self.jitter = jitter
        self.attempts = 0

    def next_delay(self) -> float:
        """Return the wait before the next attempt and count the attempt."""
        base = min(self.maximum, self.initial * 2**self.attempts)
        self.attempts += 1
        delay: float = base * (1 - self.jitter * random.random())
        return delay

    def reset(self) -> None:
        """Start again from the initial wait."""
        self.attempts = 0
