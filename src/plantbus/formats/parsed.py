"""The result of a parser that keeps the good records of a partly bad file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from plantbus.events.envelope import Event


@dataclass(frozen=True, slots=True)
class RejectedRecord:
    """One record of a file that could not become an event, with its original bytes."""

    payload: bytes
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ParsedFile:
    """Events from the good records of a file and the records it rejected."""

    events: list[Event]
    rejected: list[RejectedRecord]
