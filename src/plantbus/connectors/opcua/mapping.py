"""Turn OPC UA data changes and events into canonical plantbus events.

Each configured node has a machine id and either one event type or rules
that pick the event type by value (such as `true` to machine down). The
event data is either built in for the shop-floor types below or given by a
JSONata expression (`map`):

| event type                              | built-in data                           |
|-----------------------------------------|-----------------------------------------|
| maintenance.machine.down.v1             | machine_id, since, reason (event text)  |
| maintenance.machine.up.v1               | machine_id, since                       |
| production.machine.state.changed.v1     | machine_id, state (the value as text),  |
|                                         | previous_state, at                      |
| production.machine.parts.counted.v1     | machine_id, count (an integer value),   |
|                                         | delta, at                               |

The time is the value's source timestamp, else its server timestamp, else
the time of arrival. For an event it is the event's Time field.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from asyncua import ua

from plantbus.config.model import OpcUaNodeConfig
from plantbus.errors import ConfigError, MappingError
from plantbus.events.envelope import Event, format_time
from plantbus.pipeline.mapping import UNDEFINED, Expression, compile_expression

MACHINE_DOWN = "maintenance.machine.down.v1"
MACHINE_UP = "maintenance.machine.up.v1"
STATE_CHANGED = "production.machine.state.changed.v1"
PARTS_COUNTED = "production.machine.parts.counted.v1"
BUILT_IN_TYPES = (MACHINE_DOWN, MACHINE_UP, STATE_CHANGED, PARTS_COUNTED)

# Namespace of the derived event ids: uuid5(NAMESPACE_URL, "urn:plantbus:opcua").
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:plantbus:opcua")


class NotificationError(ValueError):
    """A notification that cannot become an event, so it goes to the dead letters."""


@dataclass(slots=True)
class Notification:
    """One data change or event of a subscribed node, with JSON-ready values."""

    node_id: str
    value: Any
    # RFC 3339 time of the value or event.
    at: str
    # Fields of an event notification by browse name, or None for a data change.
    fields: dict[str, Any] | None = None
    # OPC UA binary encoding of what the server sent (a DataValue or the
    # event's field list), kept for dead letters.
    raw: bytes = b""


class NodeMapper:
    """Map the notifications of one configured node to events."""

    def __init__(self, source: str, config: OpcUaNodeConfig) -> None:
        self.source = source
        self.config = config
        self.expression: Expression | None = (
            compile_expression(config.map) if config.map is not None else None
        )
        types = [config.type] if config.type else [r.type for r in config.rules]
        if self.expression is None:
            unknown = [t for t in types if t not in BUILT_IN_TYPES]
            if unknown:
                raise ConfigError(
                    f"OPC UA node {config.node_id!r} maps to {unknown[0]!r}, "
                    f"which has no built-in data. Give a JSONata `map` for it or "
                    f"use one of {list(BUILT_IN_TYPES)!r}."
                )
        # Last value of a data change, to skip repeats after a resubscribe.
        self.previous: Any = None
        self._seen = False

    def map(self, notification: Notification) -> list[Event]:
        """Return the event of one notification (none when no rule matches)."""
        is_event = notification.fields is not None
        if not is_event and self._seen and _same(notification.value, self.previous):
            # A new subscription sends the current value again.
            return []
        event_type = self._event_type(notification.value)
        previous = self.previous
        if not is_event:
            self.previous = notification.value
            self._seen = True
        if event_type is None:
            return []

        if self.expression is not None:
            data = self._mapped(notification, previous)
        else:
            data = self._built_in(event_type, notification, previous)
        machine_id = self.config.machine_id
        event = Event.create(
            event_type,
            f"opcua:{self.source}",
            data,
            subject=machine_id,
            time=notification.at,
            partitionkey=machine_id,
        )
        name = "|".join(
            (self.config.node_id, event_type, notification.at, repr(notification.value))
        )
        event.id = str(uuid.uuid5(_ID_NAMESPACE, name))
        return [event]

    def _event_type(self, value: Any) -> str | None:
        if self.config.type is not None:
            return self.config.type
        for rule in self.config.rules:
            if _same(rule.when, value):
                return rule.type
        return None

    def _mapped(self, notification: Notification, previous: Any) -> dict[str, Any]:
        assert self.expression is not None
        document = {
            "value": notification.value,
            "previous": previous,
            "node_id": self.config.node_id,
            "machine_id": self.config.machine_id,
            "work_center": self.config.work_center,
            "source_timestamp": notification.at,
            "fields": notification.fields,
        }
        try:
            data = self.expression.evaluate(document)
        except MappingError as exc:
            raise NotificationError(str(exc)) from exc
        if data is UNDEFINED or not isinstance(data, dict):
            raise NotificationError(
                f"The `map` expression of OPC UA node {self.config.node_id!r} "
                f"returned {data!r} for value {notification.value!r}, but it must "
                f"return an object with the event data."
            )
        return data

    def _built_in(
        self, event_type: str, notification: Notification, previous: Any
    ) -> dict[str, Any]:
        config = self.config
        data: dict[str, Any] = {"machine_id": config.machine_id}
        if event_type in (MACHINE_DOWN, MACHINE_UP):
            data["since"] = notification.at
            message = (notification.fields or {}).get("Message")
            if event_type == MACHINE_DOWN and isinstance(message, str) and message:
                data["reason"] = message[:2000]
        elif event_type == STATE_CHANGED:
            data["state"] = _text(notification.value, config.node_id)
            if previous is not None:
                data["previous_state"] = _text(previous, config.node_id)
            data["at"] = notification.at
        else:
            count = _count(notification.value, config.node_id)
            data["count"] = count
            if isinstance(previous, int) and not isinstance(previous, bool):
                # A smaller count than before means the counter was reset.
                data["delta"] = count - previous if count >= previous else count
            data["at"] = notification.at
        if config.work_center is not None:
            data["work_center"] = config.work_center
        return data


def _same(left: Any, right: Any) -> bool:
    """Compare as JSON values do: `true` equals neither `1` nor `"true"`."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    return bool(left == right)


def _text(value: Any, node_id: str) -> str:
    text = value if isinstance(value, str) else _json_text(value)
    if not text or len(text) > 128:
        raise NotificationError(
            f"OPC UA node {node_id!r} has the invalid state value {value!r}: "
            f"expected text of 1 to 128 characters. Map it with rules or a `map` "
            f"expression."
        )
    return text


def _json_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _count(value: Any, node_id: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    raise NotificationError(
        f"OPC UA node {node_id!r} has the invalid part count {value!r}: "
        f"expected a whole number of 0 or more."
    )


def to_json(value: Any) -> Any:
    """Convert an OPC UA value to JSON types (LocalizedText to its text, ...)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return format_time(moment)
    if isinstance(value, ua.LocalizedText):
        return value.Text
    if isinstance(value, ua.NodeId):
        return value.to_string()
    if isinstance(value, ua.QualifiedName):
        return value.to_string()
    if isinstance(value, ua.StatusCode):
        return value.name
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    return str(value)


def timestamp(*candidates: datetime | None) -> str:
    """Return the first of `candidates` that is set as RFC 3339, else now."""
    for moment in candidates:
        if moment is not None:
            aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
            return format_time(aware)
    return format_time(datetime.now(UTC))
