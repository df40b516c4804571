"""Exceptions raised by plantbus.

Every error that plantbus raises on purpose derives from one root::

    PlantbusError
    ├── ConfigError            a hub file or option is wrong; raised before start
    ├── EventError             an event broke a rule of the envelope or its schema
    │   ├── EnvelopeError      CloudEvents 1.0 attribute rules
    │   └── SchemaError        the JSON Schema of the event type
    ├── BatchRejected          one or more events of a batch are invalid
    ├── FormatError            an input document (B2MML, CSV, ...) cannot be read
    │   └── EdiError           an X12 or EDIFACT interchange has no readable envelope
    ├── BackboneError          the event log cannot append, read or commit
    ├── StateError             the state store cannot read or write
    ├── MappingError           a mapping expression failed on an event
    └── DeliveryError          a sink could not deliver an event
        ├── RetryableDeliveryError   try again later (timeout, 5xx, 429)
        └── PermanentDeliveryError   trying again will not help (validation)

Messages are full sentences that name the value, the field and the rule, and
say what to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class PlantbusError(Exception):
    """Root of every error that plantbus raises on purpose."""


class ConfigError(PlantbusError):
    """A hub file or an option is wrong; the hub refuses to start."""


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule: where in the event or document, which value, which rule."""

    path: str
    value: Any
    rule: str

    def describe(self) -> str:
        """Return the violation as one readable clause."""
        if self.value is None and "required" in self.rule:
            return f"field `{self.path}` is missing: {self.rule}"
        return f"field `{self.path}` is {_shorten(self.value)}: {self.rule}"


# Characters of a value's repr that a message quotes, at most; the violation
# itself keeps the whole value.
_QUOTED_MAX = 200


def _shorten(value: Any) -> str:
    """Return the repr of `value`, cut in the middle when it is very long."""
    text = repr(value)
    if len(text) <= _QUOTED_MAX:
        return text
    half = _QUOTED_MAX // 2
    return f"{text[:half]}…{text[-half:]} ({len(text)} characters)"


class EventError(PlantbusError):
    """An event broke one or more rules; `violations` lists each of them."""

    def __init__(self, event_id: str | None, violations: list[Violation]) -> None:
        self.event_id = event_id
        self.violations = violations
        label = f"Event {event_id!r}" if event_id else "Event without an id"
        clauses = "; ".join(v.describe() for v in violations)
        super().__init__(f"{label} is invalid: {clauses}.")


class EnvelopeError(EventError):
    """The CloudEvents envelope of an event is invalid."""


class SchemaError(EventError):
    """The data of an event does not match the JSON Schema of its type."""


class BatchRejected(PlantbusError):
    """Some events of a batch are invalid, so none of the batch was appended."""

    def __init__(self, errors: list[tuple[int, EventError]]) -> None:
        self.errors = errors
        listed = " ".join(f"[{index}] {error}" for index, error in errors)
        super().__init__(
            f"{len(errors)} event(s) of the batch are invalid and nothing was "
            f"appended: {listed}"
        )


@dataclass(slots=True)
class FormatProblem:
    """A location in an input document and the rule it broke."""

    location: str
    message: str
    line: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


class FormatError(PlantbusError):
    """An input document cannot be turned into events."""

    def __init__(self, source: str, problems: list[FormatProblem]) -> None:
        self.source = source
        self.problems = problems
        where = "; ".join(
            f"{p.location}{f' (line {p.line})' if p.line else ''}: {p.message}"
            for p in problems
        )
        super().__init__(f"Document {source!r} was rejected: {where}")


class EdiError(FormatError):
    """An X12 or EDIFACT interchange cannot be read far enough to acknowledge it.

    `segment` is the segment tag, `position` its 1-based position in the
    interchange, `element` the 1-based element position (None for the whole
    segment), `value` the offending text and `rule` the rule it broke.
    """

    def __init__(
        self,
        source: str,
        *,
        segment: str,
        position: int,
        element: int | None,
        value: str,
        rule: str,
    ) -> None:
        self.segment = segment
        self.position = position
        self.element = element
        self.value = value
        self.rule = rule
        where = f"segment {position} ({segment or 'empty'})"
        if element is not None:
            where += f" element {element}"
        message = f"value {value!r} is invalid: {rule}"
        super().__init__(source, [FormatProblem(where, message)])


class BackboneError(PlantbusError):
    """The event log failed to append, read or commit."""


class StateError(PlantbusError):
    """The state store (ledger, dead letters, audit log) cannot read or write."""


class MappingError(PlantbusError):
    """A mapping expression failed on an event at run time."""

    def __init__(self, message: str, *, expression: str, event_id: str | None) -> None:
        super().__init__(message)
        self.expression = expression
        self.event_id = event_id


class DeliveryError(PlantbusError):
    """A sink failed to deliver an event."""


class RetryableDeliveryError(DeliveryError):
    """A delivery failed for a reason that may go away (timeout, 5xx, 429)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """A delivery failed for a reason that another attempt will not fix."""
