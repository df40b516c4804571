"""Turn MTConnect observations into canonical plantbus events.

The mapping, per data item type (sub-types as noted):

| MTConnect observation                  | plantbus event                          |
|----------------------------------------|-----------------------------------------|
| EXECUTION, value differs from the last | production.machine.state.changed.v1     |
| PART_COUNT (no sub-type or ALL), an    | production.machine.parts.counted.v1     |
|   integer that differs from the last   |                                         |
| AVAILABILITY UNAVAILABLE, or           | maintenance.machine.down.v1 when the    |
|   EMERGENCY_STOP TRIGGERED             |   machine was not down already          |
| AVAILABILITY AVAILABLE and             | maintenance.machine.up.v1 when the      |
|   EMERGENCY_STOP ARMED again           |   last reason for down has cleared      |
| PROGRAM (no sub-type or MAIN)          | no event; sets `program` of later events|

Every other observation, conditions included, is read and dropped. Event ids
are derived from the machine, the event type, the observation's timestamp and
value. So the same observation read twice (after a reconnect, or from both
`/current` and `/sample`) becomes the same event, and the log drops the repeat.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from plantbus.events.envelope import Event, parse_time

STATE_CHANGED = "production.machine.state.changed.v1"
PARTS_COUNTED = "production.machine.parts.counted.v1"
MACHINE_DOWN = "maintenance.machine.down.v1"
MACHINE_UP = "maintenance.machine.up.v1"

# Namespace of the derived event ids: uuid5(NAMESPACE_URL, "urn:plantbus:mtconnect").
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:plantbus:mtconnect")
_PART_COUNT_SUB_TYPES = (None, "ALL")
_PROGRAM_SUB_TYPES = (None, "MAIN")
_DOWN_REASONS = {
    ("AVAILABILITY", "UNAVAILABLE"): (
        "UNAVAILABLE",
        "the machine reports AVAILABILITY UNAVAILABLE",
    ),
    ("EMERGENCY_STOP", "TRIGGERED"): (
        "EMERGENCY_STOP",
        "the emergency stop is TRIGGERED",
    ),
}
_UP_VALUES = {
    ("AVAILABILITY", "AVAILABLE"): "UNAVAILABLE",
    ("EMERGENCY_STOP", "ARMED"): "EMERGENCY_STOP",
}
_MAX_IDENTIFIER = 128


@dataclass(frozen=True, slots=True)
class Observation:
    """One value that a device reported for one data item at one time."""

    # RFC 3339 timestamp as the device or agent sent it.
    timestamp: str
    device: str
    # Data item id or name, as the input named it.
    key: str
    # MTConnect type such as EXECUTION, or None when the data item is unknown.
    type: str | None
    value: str
    sub_type: str | None = None
    category: str | None = None
    # Agent sequence number, or None for SHDR.
    sequence: int | None = None


@dataclass(slots=True)
class _Machine:
    machine_id: str
    execution: str | None = None
    part_count: int | None = None
    program: str | None = None
    # Active reasons for down (reason code to the time it started).
    down_reasons: dict[str, str] = field(default_factory=dict)
    down_since: str | None = None


class MachineMapper:
    """Map observations of one or more devices to events, tracking each machine.

    The state (last execution, part count, program, reasons for down) lives in
    memory. After a restart of plantbus the first values of each machine are
    taken as new. A first EXECUTION gives a state change without
    `previous_state`, and a first PART_COUNT an event without `delta`.
    """

    def __init__(
        self,
        source: str,
        *,
        machine_ids: dict[str, str] | None = None,
        work_centers: dict[str, str] | None = None,
    ) -> None:
        self.source = source
        self.machine_ids = machine_ids or {}
        self.work_centers = work_centers or {}
        self._machines: dict[str, _Machine] = {}

    def machine(self, device: str) -> _Machine:
        """Return the tracked state of the machine that `device` represents."""
        machine = self._machines.get(device)
        if machine is None:
            machine = _Machine(self.machine_ids.get(device, device))
            self._machines[device] = machine
        return machine

    def map(self, observation: Observation) -> list[Event]:
        """Return the events that one observation gives, in order, often none."""
        kind = observation.type
        if kind is None:
            return []
        machine = self.machine(observation.device)
        value = observation.value
        if kind == "EXECUTION":
            return self._execution(machine, observation)
        if kind == "PART_COUNT" and observation.sub_type in _PART_COUNT_SUB_TYPES:
            return self._part_count(machine, observation)
        if kind == "PROGRAM" and observation.sub_type in _PROGRAM_SUB_TYPES:
            machine.program = _identifier(value)
            return []
        if (kind, value) in _DOWN_REASONS:
            return self._down(machine, observation, *_DOWN_REASONS[(kind, value)])
        if (kind, value) in _UP_VALUES:
            return self._up(machine, observation, _UP_VALUES[(kind, value)])
        return []

    def _execution(self, machine: _Machine, observation: Observation) -> list[Event]:
        state = _identifier(observation.value)
        if state is None or state == machine.execution:
            return []
        data: dict[str, object] = {
            "machine_id": machine.machine_id,
            "state": state,
            "at": observation.timestamp,
        }
        if machine.execution is not None:
            data["previous_state"] = machine.execution
        if machine.program is not None:
            data["program"] = machine.program
        self._add_work_center(data, observation.device)
        machine.execution = state
        return [self._event(STATE_CHANGED, machine, observation, data)]

    def _part_count(self, machine: _Machine, observation: Observation) -> list[Event]:
        try:
            count = int(observation.value)
        except ValueError:
            # UNAVAILABLE or a value that is no count: keep the last count.
            return []
        if count < 0 or count == machine.part_count:
            return []
        data: dict[str, object] = {
            "machine_id": machine.machine_id,
            "count": count,
            "at": observation.timestamp,
        }
        if machine.part_count is not None:
            # A smaller count than before means the counter was reset.
            data["delta"] = (
                count - machine.part_count if count > machine.part_count else count
            )
        if machine.program is not None:
            data["program"] = machine.program
        machine.part_count = count
        return [self._event(PARTS_COUNTED, machine, observation, data)]

    def _down(
        self, machine: _Machine, observation: Observation, code: str, reason: str
    ) -> list[Event]:
        was_down = bool(machine.down_reasons)
        machine.down_reasons.setdefault(code, observation.timestamp)
        if was_down:
            return []
        machine.down_since = observation.timestamp
        data: dict[str, object] = {
            "machine_id": machine.machine_id,
            "since": observation.timestamp,
            "reason_code": code,
            "reason": f"MTConnect: {reason}.",
        }
        self._add_work_center(data, observation.device)
        return [self._event(MACHINE_DOWN, machine, observation, data)]

    def _up(
        self, machine: _Machine, observation: Observation, code: str
    ) -> list[Event]:
        if machine.down_reasons.pop(code, None) is None or machine.down_reasons:
            return []
        data: dict[str, object] = {
            "machine_id": machine.machine_id,
            "since": observation.timestamp,
        }
        downtime = _seconds_between(machine.down_since, observation.timestamp)
        if downtime is not None:
            data["downtime_seconds"] = downtime
        self._add_work_center(data, observation.device)
        machine.down_since = None
        return [self._event(MACHINE_UP, machine, observation, data)]

    def _add_work_center(self, data: dict[str, object], device: str) -> None:
        work_center = self.work_centers.get(device)
        if work_center is not None:
            data["work_center"] = work_center

    def _event(
        self,
        event_type: str,
        machine: _Machine,
        observation: Observation,
        data: dict[str, object],
    ) -> Event:
        name = "|".join(
            (machine.machine_id, event_type, observation.timestamp, observation.value)
        )
        event = Event.create(
            event_type,
            f"mtconnect:{self.source}",
            data,
            subject=machine.machine_id,
            time=observation.timestamp,
            partitionkey=machine.machine_id,
        )
        event.id = str(uuid.uuid5(_ID_NAMESPACE, name))
        return event


def _identifier(value: str) -> str | None:
    """Return `value` when it fits the catalogue's identifier rule, else None."""
    if not value or len(value) > _MAX_IDENTIFIER or not value.isprintable():
        return None
    return value


def _seconds_between(start: str | None, end: str) -> str | None:
    """Return the seconds from `start` to `end` as decimal text, or None if negative."""
    if start is None:
        return None
    elapsed = parse_time(end) - parse_time(start)
    if elapsed.total_seconds() < 0:
        return None
    micro = Decimal(elapsed.days * 86_400_000_000 + elapsed.seconds * 1_000_000)
    total = (micro + elapsed.microseconds) / Decimal(1_000_000)
    return format(total.normalize(), "f")


def parse_timestamp(text: str) -> datetime:
    """Parse an MTConnect timestamp (RFC 3339, UTC when it has no offset)."""
    return parse_time(normalise_timestamp(text))


def normalise_timestamp(text: str) -> str:
    """Return an MTConnect timestamp as RFC 3339 text, keeping its digits.

    MTConnect times are UTC. Some adapters leave out the `Z`, so it is added
    to make the time unambiguous. An SHDR `@duration` suffix is dropped.
    Raises ValueError for text that is no timestamp.
    """
    stamp = text.strip().split("@", 1)[0]
    offset = stamp[19:]
    has_offset = "+" in offset or "-" in offset or offset[-1:] in ("Z", "z")
    if len(stamp) >= 19 and not has_offset:
        stamp += "Z"
    parse_time(stamp)
    return stamp
