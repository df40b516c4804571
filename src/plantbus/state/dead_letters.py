"""Dead letters: input or events that could not be ingested or delivered."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Attempt:
    """One delivery attempt and how it ended."""

    at: float
    error: str


@dataclass(slots=True)
class DeadLetter:
    """Something plantbus gave up on, kept whole so that it can be fixed and redriven.

    Ingest rejects keep the original bytes of the input (`payload`) and have
    no event id; delivery failures keep the event as it was in the log.
    """

    stage: str  # "ingest" or the pipeline step that failed, e.g. "deliver:tryton"
    error: str
    payload: bytes
    source: str
    content_type: str = "application/octet-stream"
    headers: dict[str, str] = field(default_factory=dict)
    event_id: str | None = None
    event_type: str | None = None
    pipeline: str | None = None
    sink: str | None = None
    offset: int | None = None
    attempts: list[Attempt] = field(default_factory=list)
    created_at: float = 0.0
    id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
