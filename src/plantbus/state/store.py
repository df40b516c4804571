"""The interface of the state store: idempotency ledger, dead letters, audit log."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from plantbus.state.dead_letters import Attempt, DeadLetter

# The life of a dead letter: `open` until an operator redrives (`redriving`,
# then `redriven`) or discards it. `parked` marks an event held back behind an
# earlier dead letter of the same partition key; the pipeline releases it.
DEAD_LETTER_STATUSES = ("open", "redriving", "redriven", "discarded", "parked")


def check_status(status: str) -> None:
    """Raise ValueError unless `status` is a dead-letter status."""
    if status not in DEAD_LETTER_STATUSES:
        raise ValueError(
            f"Dead letter status {status!r} is invalid: expected one of "
            f"{', '.join(map(repr, DEAD_LETTER_STATUSES))}."
        )


def dead_letter_from_row(
    row: Sequence[Any], decode: Callable[[Any], Any]
) -> DeadLetter:
    """Build a dead letter from a row of the dead_letters table of either store.

    `decode` turns a stored JSON column (headers, attempts, details) into
    Python values; the status goes into `details["status"]`.
    """
    (
        letter_id,
        created_at,
        status,
        stage,
        error,
        payload,
        source,
        content_type,
        headers,
        event_id,
        event_type,
        pipeline,
        sink,
        offset,
        attempts,
        details,
    ) = row
    letter = DeadLetter(
        stage=stage,
        error=error,
        payload=bytes(payload),
        source=source,
        content_type=content_type,
        headers=decode(headers),
        event_id=event_id,
        event_type=event_type,
        pipeline=pipeline,
        sink=sink,
        offset=offset,
        attempts=[Attempt(at, message) for at, message in decode(attempts)],
        created_at=created_at,
        id=letter_id,
        details=decode(details),
    )
    letter.details["status"] = status
    return letter


@dataclass(frozen=True, slots=True)
class Delivery:
    """One confirmed delivery of an event to a sink."""

    sink: str
    event_id: str
    target_ref: str | None
    delivered_at: float
    # Seconds from the append to the log until the sink confirmed.
    latency: float
    event_type: str = ""
    pipeline: str = ""


@dataclass(slots=True)
class DeadLetterFilter:
    """Selection of dead letters for an operation; a field set to None matches any."""

    ids: list[int] | None = None
    event_type: str | None = None
    event_id: str | None = None
    pipeline: str | None = None
    sink: str | None = None
    error_contains: str | None = None
    since: float | None = None
    until: float | None = None
    status: str | None = "open"
    # Only dead letters with a larger id, for reading page by page.
    after_id: int | None = None


def dead_letter_where(
    where: DeadLetterFilter, paramstyle: Literal["qmark", "format"]
) -> tuple[str, list[Any]]:
    """Build the WHERE clause and its parameters that select a filter's dead letters.

    `paramstyle` is the driver's DB-API parameter style: "qmark" (`?`) for
    sqlite3, "format" (`%s`) for psycopg. The clause is empty when the filter
    matches every dead letter.
    """
    sqlite = paramstyle == "qmark"
    mark = "?" if sqlite else "%s"
    clauses: list[str] = []
    parameters: list[Any] = []
    if where.ids is not None:
        if sqlite:
            clauses.append(f"id IN ({','.join('?' * len(where.ids))})")
            parameters.extend(where.ids)
        else:
            # psycopg binds a list as one array parameter, whatever its length.
            clauses.append("id = ANY(%s)")
            parameters.append(list(where.ids))
    for column, value in (
        ("event_type", where.event_type),
        ("event_id", where.event_id),
        ("sink", where.sink),
        ("status", where.status),
        ("pipeline", where.pipeline),
    ):
        if value is not None:
            clauses.append(f"{column} = {mark}")
            parameters.append(value)

    if where.error_contains is not None:
        # SQLite calls the substring search instr, PostgreSQL strpos.
        position = "instr" if sqlite else "strpos"
        clauses.append(f"{position}(error, {mark}) > 0")
        parameters.append(where.error_contains)
    if where.after_id is not None:
        clauses.append(f"id > {mark}")
        parameters.append(where.after_id)
    if where.since is not None:
        clauses.append(f"created_at >= {mark}")
        parameters.append(where.since)
    if where.until is not None:
        clauses.append(f"created_at < {mark}")
        parameters.append(where.until)

    if not clauses:
        return "", parameters
    return " WHERE " + " AND ".join(clauses), parameters


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """Entry of the audit log: actor, action, target records and time."""

    at: float
    actor: str
    action: str
    target: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """A request to move a pipeline's consumer group back, applied by the pipeline."""

    pipeline: str
    from_offset: int | None = None
    # Seconds since the epoch, UTC; exactly one of the two starts is set.
    from_time: float | None = None
    # Remove the ledger entries of the replayed events first, so they go out again.
    force: bool = False
    requested_at: float = 0.0
    id: int | None = None


class StateStore(ABC):
    """Durable state that the pipelines keep beside the log."""

    async def start(self) -> None:
        """Create tables and open connections; call once before use."""

    @abstractmethod
    async def close(self) -> None:
        """Flush pending writes and release resources."""

    @abstractmethod
    async def delivered(
        self, sink: str, event_ids: Iterable[str]
    ) -> dict[str, str | None]:
        """Return the target reference of each event id already delivered to a sink."""

    @abstractmethod
    async def record_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        """Record deliveries durably in one write; a repeated entry keeps the first."""

    @abstractmethod
    async def forget_delivery(self, sink: str, event_id: str) -> None:
        """Remove a delivery from the ledger so that a forced replay sends it again."""

    @abstractmethod
    async def deliveries(self, *, sink: str | None = None) -> list[Delivery]:
        """Return recorded deliveries, oldest first."""

    @abstractmethod
    async def add_dead_letter(self, letter: DeadLetter) -> int:
        """Store a dead letter and return its id."""

    @abstractmethod
    async def dead_letters(
        self, where: DeadLetterFilter, *, limit: int = 1000
    ) -> list[DeadLetter]:
        """Return the dead letters that match a filter, oldest first."""

    @abstractmethod
    async def claim_dead_letter(
        self, letter_id: int, expected: str, status: str
    ) -> bool:
        """Change a dead letter's status only if it is `expected`; return success.

        Two operators acting on one dead letter at once cannot both win.
        """

    @abstractmethod
    async def set_dead_letter_status(self, letter_id: int, status: str) -> None:
        """Mark a dead letter as open, redriving, redriven or discarded."""

    @abstractmethod
    async def pending_redrives(self, pipeline: str) -> list[DeadLetter]:
        """Return the dead letters of a pipeline waiting for redrive, oldest first."""

    @abstractmethod
    async def finish_redrive(self, letter_id: int, outcome: str) -> None:
        """Mark a dead letter as redriven and store how the redrive ended."""

    @abstractmethod
    async def forget_deliveries(self, sink: str, event_ids: Sequence[str]) -> int:
        """Remove the ledger entries of events at a sink and count them."""

    @abstractmethod
    async def request_replay(self, request: ReplayRequest) -> int:
        """Store a replay request for its pipeline to apply and return its id."""

    @abstractmethod
    async def pending_replays(self, pipeline: str) -> list[ReplayRequest]:
        """Return a pipeline's replay requests not yet applied, oldest first."""

    @abstractmethod
    async def finish_replay(self, request_id: int, positions: dict[int, int]) -> None:
        """Mark a replay request as applied, with the offsets the group moved to."""

    @abstractmethod
    async def park_key(self, pipeline: str, key: str, letter_id: int) -> None:
        """Hold back a partition key's later events behind a dead letter.

        Parking a key that is already parked moves it behind the new letter.
        """

    @abstractmethod
    async def unpark_key(self, pipeline: str, key: str) -> None:
        """Let a partition key's events flow again."""

    @abstractmethod
    async def parked_keys(self, pipeline: str) -> dict[str, int]:
        """Return each parked key of a pipeline with the dead letter it waits on."""

    @abstractmethod
    async def add_parked_event(self, letter: DeadLetter) -> int:
        """Store an event held back behind a parked key, with status `parked`."""

    @abstractmethod
    async def add_audit(self, record: AuditRecord) -> None:
        """Append a record to the audit log."""

    @abstractmethod
    async def audit_log(self, *, limit: int = 1000) -> list[AuditRecord]:
        """Return the newest audit records, oldest first."""
