"""The state store on SQLite, for the embedded, single-process hub."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson

from plantbus.backbone.sqlite_store import describe_error
from plantbus.errors import PlantbusError, StateError
from plantbus.state.dead_letters import DeadLetter
from plantbus.state.store import (
    DEAD_LETTER_STATUSES,
    AuditRecord,
    DeadLetterFilter,
    Delivery,
    ReplayRequest,
    StateStore,
    check_status,
    dead_letter_from_row,
    dead_letter_where,
)

logger = logging.getLogger("plantbus.state")

T = TypeVar("T")

__all__ = ["DEAD_LETTER_STATUSES", "SqliteStateStore"]

_BUSY_TIMEOUT_SECONDS = 10

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    sink TEXT NOT NULL,
    event_id TEXT NOT NULL,
    target_ref TEXT,
    delivered_at REAL NOT NULL,
    latency REAL NOT NULL,
    event_type TEXT NOT NULL DEFAULT '',
    pipeline TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (sink, event_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'open',
    stage TEXT NOT NULL,
    error TEXT NOT NULL,
    payload BLOB NOT NULL,
    source TEXT NOT NULL,
    content_type TEXT NOT NULL,
    headers TEXT NOT NULL,
    event_id TEXT,
    event_type TEXT,
    pipeline TEXT,
    sink TEXT,
    log_offset INTEGER,
    attempts TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_status ON dead_letters (status, created_at);
CREATE TABLE IF NOT EXISTS parked_keys (
    pipeline TEXT NOT NULL,
    key TEXT NOT NULL,
    letter_id INTEGER NOT NULL,
    parked_at REAL NOT NULL,
    PRIMARY KEY (pipeline, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS replays (
    id INTEGER PRIMARY KEY,
    pipeline TEXT NOT NULL,
    from_offset INTEGER,
    from_time REAL,
    force INTEGER NOT NULL,
    requested_at REAL NOT NULL,
    applied_at REAL,
    positions TEXT
);
"""


class SqliteStateStore(StateStore):
    """State store in one SQLite file, used from one thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # One thread owns the connection, so every statement runs in order.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="plantbus-state")
        self._connection: sqlite3.Connection | None = None

    async def start(self) -> None:
        """Open the file and create the tables."""
        await self._run(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            connection = sqlite3.connect(self.path, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a crash of the process, which is what
            # the ledger must survive. After a power loss the newest entries may
            # be gone, and the sinks' own natural keys catch those redeliveries.
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_SECONDS * 1000}")
            connection.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise PlantbusError(
                f"Cannot open the state store {str(self.path)!r}: {exc}. Check that "
                f"the folder exists, is writable and that the disk has space."
            ) from exc
        self._connection = connection

    async def close(self) -> None:
        """Close the file."""
        if self._connection is not None:
            await self._run(self._connection.close)
            self._connection = None
        self._executor.shutdown(wait=True)

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, function, *args)
        except sqlite3.Error as exc:
            raise describe_error(
                exc,
                self.path,
                "write" if "write" in function.__name__ else "run a statement",
                _BUSY_TIMEOUT_SECONDS,
                what="The state store",
                error=StateError,
            ) from exc

    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            raise PlantbusError("The state store is not started; call start() first.")
        return self._connection

    # Idempotency ledger

    async def delivered(
        self, sink: str, event_ids: Iterable[str]
    ) -> dict[str, str | None]:
        """Return the target reference of each event id already delivered to a sink."""
        ids = list(event_ids)
        if not ids:
            return {}
        return await self._run(self._delivered, sink, ids)

    def _delivered(self, sink: str, ids: list[str]) -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        # SQLite limits the number of bound parameters; 500 stays well below.
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db().execute(
                f"SELECT event_id, target_ref FROM deliveries "
                f"WHERE sink = ? AND event_id IN ({marks})",
                [sink, *chunk],
            )
            found.update(rows)
        return found

    async def record_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        """Record deliveries in one transaction; an entry recorded before is kept."""
        if deliveries:
            await self._run(self._write_deliveries, list(deliveries))

    def _write_deliveries(self, deliveries: list[Delivery]) -> None:
        with self._db() as db:
            db.executemany(
                "INSERT OR IGNORE INTO deliveries VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        d.sink,
                        d.event_id,
                        d.target_ref,
                        d.delivered_at,
                        d.latency,
                        d.event_type,
                        d.pipeline,
                    )
                    for d in deliveries
                ],
            )

    async def forget_delivery(self, sink: str, event_id: str) -> None:
        """Remove one ledger entry."""
        await self._run(
            self._execute,
            "DELETE FROM deliveries WHERE sink = ? AND event_id = ?",
            (sink, event_id),
        )

    def _execute(self, sql: str, parameters: tuple[Any, ...]) -> int:
        with self._db() as db:
            return db.execute(sql, parameters).lastrowid or 0

    async def deliveries(self, *, sink: str | None = None) -> list[Delivery]:
        """Return recorded deliveries, oldest first."""
        return await self._run(self._deliveries, sink)

    def _deliveries(self, sink: str | None) -> list[Delivery]:
        sql = "SELECT * FROM deliveries"
        parameters: tuple[Any, ...] = ()
        if sink is not None:
            sql += " WHERE sink = ?"
            parameters = (sink,)
        rows = self._db().execute(sql + " ORDER BY delivered_at", parameters)
        return [Delivery(*row) for row in rows]

    # Dead letters

    async def add_dead_letter(self, letter: DeadLetter) -> int:
        """Store a dead letter and return its id."""
        return await self._insert_dead_letter(letter, "open")

    async def add_parked_event(self, letter: DeadLetter) -> int:
        """Store an event held back behind a parked key, with status `parked`."""
        return await self._insert_dead_letter(letter, "parked")

    async def _insert_dead_letter(self, letter: DeadLetter, status: str) -> int:
        if not letter.created_at:
            letter.created_at = time.time()
        row = (
            letter.created_at,
            status,
            letter.stage,
            letter.error,
            letter.payload,
            letter.source,
            letter.content_type,
            orjson.dumps(letter.headers).decode(),
            letter.event_id,
            letter.event_type,
            letter.pipeline,
            letter.sink,
            letter.offset,
            orjson.dumps([[a.at, a.error] for a in letter.attempts]).decode(),
            orjson.dumps(letter.details, default=str).decode(),
        )
        letter.id = await self._run(
            self._execute,
            "INSERT INTO dead_letters (created_at, status, stage, error, payload, "
            "source, content_type, headers, event_id, event_type, pipeline, sink, "
            "log_offset, attempts, details) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            row,
        )
        logger.warning(
            "dead letter stored",
            extra={
                "dead_letter_id": letter.id,
                "event_id": letter.event_id,
                "stage": letter.stage,
                "error": letter.error,
            },
        )
        return letter.id

    async def dead_letters(
        self, where: DeadLetterFilter, *, limit: int = 1000
    ) -> list[DeadLetter]:
        """Return the dead letters that match a filter, oldest first."""
        return await self._run(self._dead_letters, where, limit)

    def _dead_letters(self, where: DeadLetterFilter, limit: int) -> list[DeadLetter]:
        condition, parameters = dead_letter_where(where, "qmark")
        sql = "SELECT * FROM dead_letters" + condition
        sql += " ORDER BY id LIMIT ?"
        parameters.append(limit)
        return [
            dead_letter_from_row(row, orjson.loads)
            for row in self._db().execute(sql, parameters)
        ]

    async def claim_dead_letter(
        self, letter_id: int, expected: str, status: str
    ) -> bool:
        """Change a dead letter's status only if it is `expected`; return success."""
        check_status(status)
        changed = await self._run(
            self._update_count,
            "UPDATE dead_letters SET status = ? WHERE id = ? AND status = ?",
            (status, letter_id, expected),
        )
        return changed == 1

    def _update_count(self, sql: str, parameters: tuple[Any, ...]) -> int:
        with self._db() as db:
            return db.execute(sql, parameters).rowcount

    async def set_dead_letter_status(self, letter_id: int, status: str) -> None:
        """Mark a dead letter as open, redriving, redriven or discarded."""
        check_status(status)
        await self._run(
            self._execute,
            "UPDATE dead_letters SET status = ? WHERE id = ?",
            (status, letter_id),
        )

    async def pending_redrives(self, pipeline: str) -> list[DeadLetter]:
        """Return the dead letters of a pipeline waiting for redrive, oldest first."""
        return await self.dead_letters(
            DeadLetterFilter(status="redriving", pipeline=pipeline)
        )

    async def finish_redrive(self, letter_id: int, outcome: str) -> None:
        """Mark a dead letter as redriven and store how the redrive ended."""
        await self._run(
            self._execute,
            "UPDATE dead_letters SET status = 'redriven', "
            "details = json_set(details, '$.redrive_outcome', ?, "
            "'$.redriven_at', ?) WHERE id = ?",
            (outcome, time.time(), letter_id),
        )

    async def forget_deliveries(self, sink: str, event_ids: Sequence[str]) -> int:
        """Remove the ledger entries of events at a sink and count them."""
        if not event_ids:
            return 0
        return await self._run(self._forget_deliveries, sink, list(event_ids))

    def _forget_deliveries(self, sink: str, event_ids: list[str]) -> int:
        removed = 0
        with self._db() as db:
            for start in range(0, len(event_ids), 500):
                chunk = event_ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                removed += db.execute(
                    f"DELETE FROM deliveries WHERE sink = ? AND event_id IN ({marks})",
                    [sink, *chunk],
                ).rowcount
        return removed

    # Parked partition keys

    async def park_key(self, pipeline: str, key: str, letter_id: int) -> None:
        """Hold back a partition key's later events behind a dead letter."""
        await self._run(
            self._execute,
            "INSERT INTO parked_keys (pipeline, key, letter_id, parked_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (pipeline, key) DO UPDATE SET "
            "letter_id = excluded.letter_id, parked_at = excluded.parked_at",
            (pipeline, key, letter_id, time.time()),
        )

    async def unpark_key(self, pipeline: str, key: str) -> None:
        """Let a partition key's events flow again."""
        await self._run(
            self._execute,
            "DELETE FROM parked_keys WHERE pipeline = ? AND key = ?",
            (pipeline, key),
        )

    async def parked_keys(self, pipeline: str) -> dict[str, int]:
        """Return each parked key of a pipeline with the dead letter it waits on."""
        rows = await self._run(
            lambda: (
                self._db()
                .execute(
                    "SELECT key, letter_id FROM parked_keys WHERE pipeline = ?",
                    (pipeline,),
                )
                .fetchall()
            )
        )
        return {key: letter_id for key, letter_id in rows}

    # Replay requests

    async def request_replay(self, request: ReplayRequest) -> int:
        """Store a replay request for its pipeline to apply and return its id."""
        return await self._run(
            self._execute,
            "INSERT INTO replays (pipeline, from_offset, from_time, force, "
            "requested_at) VALUES (?, ?, ?, ?, ?)",
            (
                request.pipeline,
                request.from_offset,
                request.from_time,
                int(request.force),
                request.requested_at or time.time(),
            ),
        )

    async def pending_replays(self, pipeline: str) -> list[ReplayRequest]:
        """Return a pipeline's replay requests not yet applied, oldest first."""
        rows = await self._run(
            lambda: (
                self._db()
                .execute(
                    "SELECT pipeline, from_offset, from_time, force, requested_at, "
                    "id FROM replays WHERE pipeline = ? AND applied_at IS NULL "
                    "ORDER BY id",
                    (pipeline,),
                )
                .fetchall()
            )
        )
        return [
            ReplayRequest(name, offset, moment, bool(force), requested_at, request_id)
            for name, offset, moment, force, requested_at, request_id in rows
        ]

    async def finish_replay(self, request_id: int, positions: dict[int, int]) -> None:
        """Mark a replay request as applied, with the offsets the group moved to."""
        await self._run(
            self._execute,
            "UPDATE replays SET applied_at = ?, positions = ? WHERE id = ?",
            (
                time.time(),
                orjson.dumps(positions, option=orjson.OPT_NON_STR_KEYS).decode(),
                request_id,
            ),
        )

    # Audit log

    async def add_audit(self, record: AuditRecord) -> None:
        """Append a record to the audit log."""
        await self._run(
            self._execute,
            "INSERT INTO audit (at, actor, action, target, details) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                record.at,
                record.actor,
                record.action,
                record.target,
                orjson.dumps(record.details, default=str).decode(),
            ),
        )

    async def audit_log(self, *, limit: int = 1000) -> list[AuditRecord]:
        """Return the newest audit records, oldest first."""
        rows = await self._run(
            lambda: (
                self._db()
                .execute(
                    "SELECT at, actor, action, target, details FROM audit "
                    "ORDER BY id DESC LIMIT ?",
                    (limit,),
                )
                .fetchall()
            )
        )
        return [
            AuditRecord(at, actor, action, target, orjson.loads(details))
            for at, actor, action, target, details in reversed(rows)
        ]
