"""Sparkplug B messages as plantbus events.

Births and data become `maintenance.machine.telemetry.v1` events, one per
message and machine. A death certificate (NDEATH, DDEATH) becomes
`maintenance.machine.down.v1`, and a birth after a death seen in this run
becomes `maintenance.machine.up.v1`. A configured state metric adds down and
up events when its value changes. Node messages belong to the machine named
by `node_machine_id` and device messages to `device_machine_id`.

A sequence gap, or a data message whose aliases no birth has defined, makes
the handler request a rebirth from the edge node with an NCMD. A data message with
an unknown alias cannot name its metrics and is rejected whole.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from plantbus.config.model import MqttSubscriptionConfig
from plantbus.errors import FormatError, FormatProblem
from plantbus.events.envelope import Event, format_time
from plantbus.formats.sparkplug.payload import (
    DATA_TYPE_NAMES,
    decode_payload,
    encode_rebirth_request,
    metric_value,
    property_text,
)
from plantbus.formats.sparkplug.state import (
    DeviceState,
    HostState,
    MetricInfo,
    NodeState,
    SparkplugState,
)
from plantbus.formats.sparkplug.topic import SparkplugTopic, command_topic, parse_topic

logger = logging.getLogger("plantbus.connectors.mqtt")

TELEMETRY = "maintenance.machine.telemetry.v1"
DOWN = "maintenance.machine.down.v1"
UP = "maintenance.machine.up.v1"
# Metrics that describe the Sparkplug session, not the machine.
_SESSION_METRICS = ("bdSeq", "Node Control/")
_UNIT_KEYS = ("engUnit", "EngUnit", "unit")
# Event ids derive from the message bytes, so a message that the broker
# delivers again after a crash gives the same ids and the log drops the repeats.
_ID_NAMESPACE = uuid.UUID("6c1f3a52-5f0e-4a8e-9f55-0d2b8e3c7a41")


@dataclass(slots=True)
class Outcome:
    """The events of one Sparkplug message, or its error, and an NCMD to publish."""

    events: list[Event] = field(default_factory=list)
    rebirth: tuple[str, bytes] | None = None
    # Set when the message cannot become events; a rebirth may still be due.
    error: FormatError | None = None


class SparkplugHandler:
    """Track edge nodes and turn their messages into events for one subscription."""

    def __init__(
        self, config: MqttSubscriptionConfig, event_source: str, state: SparkplugState
    ) -> None:
        self.config = config
        self.event_source = event_source
        self.state = state
        self.running_values = {value.lower() for value in config.running_values}
        self._message_digest = ""

    def handle(self, topic: str, data: bytes) -> Outcome:
        """Handle one message; raise FormatError when it cannot become events."""
        # Sparkplug payloads carry a timestamp and a seq, so equal bytes on
        # one topic mean the same message delivered again.
        self._message_digest = hashlib.sha256(f"{topic}\0".encode() + data).hexdigest()
        parts = parse_topic(topic)
        if parts is None:
            raise FormatError(
                topic,
                [
                    FormatProblem(
                        "topic",
                        "is not a Sparkplug B topic; expected spBv1.0/<group>/"
                        "<message type>/<edge node>[/<device>] or spBv1.0/STATE/"
                        "<host id>.",
                    )
                ],
            )
        if parts.message_type == "STATE":
            self._host_state(parts, topic, data)
            return Outcome()
        if parts.message_type in ("NCMD", "DCMD"):
            return Outcome()

        payload = decode_payload(data, topic)
        node = self.state.node(parts.group, parts.node)
        outcome = Outcome()
        kind = parts.message_type
        if kind == "NDEATH":
            self._node_death(node, parts, payload, outcome)
            return outcome

        if kind == "NBIRTH":
            was_dead = node.died
            node.birth(_bd_seq(payload), int(payload.seq))
            node.died = False
            if was_dead:
                outcome.events.append(self._up(parts, payload, topic))
        elif not node.online:
            node.advance(int(payload.seq))
            self._request_rebirth(node, parts, outcome, "no current NBIRTH")
        elif not node.advance(int(payload.seq)):
            self._request_rebirth(
                node, parts, outcome, f"seq {payload.seq} out of order"
            )

        if parts.device is not None:
            device = node.devices.setdefault(parts.device, DeviceState())
            if kind == "DBIRTH":
                if device.died:
                    outcome.events.append(self._up(parts, payload, topic))
                device.online, device.died = True, False
            elif kind == "DDEATH":
                device.online, device.died = False, True
                outcome.events.append(self._down(parts, payload, topic, "DDEATH"))
                return outcome

        birth = kind in ("NBIRTH", "DBIRTH")
        try:
            metrics = self._metrics(node, parts, payload, topic, birth, outcome)
        except FormatError as exc:
            outcome.events.clear()
            outcome.error = exc
            return outcome
        if metrics:
            outcome.events.append(self._telemetry(parts, payload, topic, metrics))
            outcome.events.extend(self._state_changes(node, parts, metrics))
        return outcome

    def _metrics(
        self,
        node: NodeState,
        parts: SparkplugTopic,
        payload: Any,
        topic: str,
        birth: bool,
        outcome: Outcome,
    ) -> list[dict[str, Any]]:
        default_at = _time(payload.timestamp) if payload.HasField("timestamp") else None
        metrics: list[dict[str, Any]] = []
        unknown: list[int] = []
        for metric in payload.metrics:
            info = self._resolve(node, metric, birth)
            if info is None:
                unknown.append(int(metric.alias))
                continue
            if info.name.startswith(_SESSION_METRICS):
                continue
            item: dict[str, Any] = {"name": info.name}
            value = metric_value(metric)
            if value is not None:
                item["value"] = value
            if info.unit:
                item["unit"] = info.unit
            datatype = metric.datatype or info.datatype
            if datatype in DATA_TYPE_NAMES:
                item["datatype"] = DATA_TYPE_NAMES[datatype]
            item["at"] = (
                _time(metric.timestamp)
                if metric.HasField("timestamp")
                else default_at or format_time(datetime.now(UTC))
            )
            metrics.append(item)
        if unknown:
            self._request_rebirth(node, parts, outcome, f"unknown aliases {unknown}")
            raise FormatError(
                topic,
                [
                    FormatProblem(
                        "metrics",
                        f"aliases {unknown} are not defined by a birth certificate "
                        f"of edge node {parts.node!r}; a rebirth was requested.",
                    )
                ],
            )
        return metrics

    def _resolve(self, node: NodeState, metric: Any, birth: bool) -> MetricInfo | None:
        alias = int(metric.alias) if metric.HasField("alias") else None
        if metric.HasField("name") and metric.name:
            known = node.names.get(metric.name)
            if birth or known is None:
                unit = None
                if metric.HasField("properties"):
                    for key in _UNIT_KEYS:
                        unit = property_text(metric.properties, key) or unit
                known = MetricInfo(metric.name, int(metric.datatype), unit)
                if birth:
                    node.learn(alias, known)
            return known
        return node.aliases.get(alias) if alias is not None else None

    def _state_changes(
        self,
        node: NodeState,
        parts: SparkplugTopic,
        metrics: list[dict[str, Any]],
    ) -> list[Event]:
        if self.config.state_metric is None:
            return []
        events = []
        machine = self._machine_id(parts)
        for item in metrics:
            if item["name"] != self.config.state_metric or "value" not in item:
                continue
            running = str(item["value"]).lower() in self.running_values
            before = node.running.get(machine)
            node.running[machine] = running
            # A machine first seen running is no news; first seen stopped is.
            if before == running or (before is None and running):
                continue
            kind = UP if running else DOWN
            events.append(self._event(kind, parts, {"since": item["at"]}, item["at"]))
        return events

    def _node_death(
        self, node: NodeState, parts: SparkplugTopic, payload: Any, outcome: Outcome
    ) -> None:
        online_devices = [name for name, d in node.devices.items() if d.online]
        if not node.death(_bd_seq(payload)):
            logger.info(
                "Ignored NDEATH of edge node %s/%s with bdSeq %s: the current "
                "session has bdSeq %s.",
                parts.group,
                parts.node,
                _bd_seq(payload),
                node.bd_seq,
            )
            return
        topic = f"NDEATH {parts.group}/{parts.node}"
        outcome.events.append(self._down(parts, payload, topic, "NDEATH"))
        for device in online_devices:
            device_parts = SparkplugTopic("NDEATH", parts.group, parts.node, device)
            outcome.events.append(
                self._down(device_parts, payload, f"{topic}/{device}", "NDEATH")
            )

    def _request_rebirth(
        self, node: NodeState, parts: SparkplugTopic, outcome: Outcome, reason: str
    ) -> None:
        if not self.config.request_rebirth:
            return
        if not node.should_request_rebirth(self.config.rebirth_interval_seconds):
            return
        logger.warning(
            "Requesting a rebirth of edge node %s/%s: %s.",
            parts.group,
            parts.node,
            reason,
        )
        request = encode_rebirth_request(int(time.time() * 1000))
        outcome.rebirth = (command_topic(parts.group, parts.node), request)

    def _host_state(self, parts: SparkplugTopic, topic: str, data: bytes) -> None:
        assert parts.host is not None
        text = data.decode("utf-8", "replace").strip()
        if text in ("ONLINE", "OFFLINE"):
            state = HostState(online=text == "ONLINE")
        else:
            try:
                document = orjson.loads(data)
                state = HostState(
                    online=bool(document["online"]), timestamp=document.get("timestamp")
                )
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                raise FormatError(
                    topic,
                    [
                        FormatProblem(
                            "payload",
                            "is not a Sparkplug STATE message; expected JSON such "
                            'as {"online": true, "timestamp": 1700000000000}.',
                        )
                    ],
                ) from exc
        self.state.hosts[parts.host] = state
        logger.info(
            "Sparkplug host application %r is %s.",
            parts.host,
            "online" if state.online else "offline",
        )

    def _machine_id(self, parts: SparkplugTopic) -> str:
        template = (
            self.config.node_machine_id
            if parts.device is None
            else self.config.device_machine_id
        )
        return template.format(group=parts.group, node=parts.node, device=parts.device)

    def _telemetry(
        self,
        parts: SparkplugTopic,
        payload: Any,
        topic: str,
        metrics: list[dict[str, Any]],
    ) -> Event:
        at = _time(payload.timestamp) if payload.HasField("timestamp") else None
        at = at or max(item["at"] for item in metrics)
        data = {"machine_id": self._machine_id(parts), "metrics": metrics, "at": at}
        return self._event(TELEMETRY, parts, data, at, topic)

    def _down(
        self, parts: SparkplugTopic, payload: Any, topic: str, reason: str
    ) -> Event:
        since = _now_or(payload)
        data = {
            "since": since,
            "reason_code": f"SPARKPLUG_{reason}",
            "reason": f"Sparkplug {reason} from {topic}",
        }
        return self._event(DOWN, parts, data, since, topic)

    def _up(self, parts: SparkplugTopic, payload: Any, topic: str) -> Event:
        since = _now_or(payload)
        return self._event(UP, parts, {"since": since}, since, topic)

    def _event(
        self,
        event_type: str,
        parts: SparkplugTopic,
        data: dict[str, Any],
        at: str,
        topic: str = "",
    ) -> Event:
        machine = self._machine_id(parts)
        data = {"machine_id": machine, **data}
        event = Event.create(
            event_type,
            self.event_source,
            data,
            subject=topic or None,
            time=at,
            partitionkey=machine,
        )
        seed = f"{self._message_digest}|{event_type}|{machine}"
        event.id = str(uuid.uuid5(_ID_NAMESPACE, seed))
        return event


def _bd_seq(payload: Any) -> int | None:
    for metric in payload.metrics:
        if metric.name == "bdSeq":
            value = metric_value(metric)
            return int(value) if isinstance(value, str) and value.isdigit() else None
    return None


def _time(milliseconds: int) -> str:
    moment = datetime.fromtimestamp(milliseconds / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _now_or(payload: Any) -> str:
    if payload.HasField("timestamp"):
        return _time(payload.timestamp)
    return format_time(datetime.now(UTC))
