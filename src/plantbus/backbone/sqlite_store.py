"""Blocking SQLite storage for the embedded event log.

These functions run on the worker threads of `SqliteLog`, never on the event
loop. One connection writes and one connection reads, and in WAL mode a reader
does not wait for a commit in progress. The schema:

- `events` holds one row per record. `offset` is the integer primary key, so
  records are stored in offset order. `event_id` is unique and de-duplicates
  appends. `size` is the length of `body` in bytes and drives trimming by size.
- `consumer_offsets` holds the committed offset per consumer group and partition.
- `log_meta` is a single row with the partition count, the last offset ever
  assigned, the last `appended_at` and the total size of all bodies. Offsets come
  from this row rather than from MAX(offset), so they keep increasing after
  `trim` deletes every record.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson

from plantbus.backbone.log import Appended, Record
from plantbus.errors import BackboneError, PlantbusError

# `user_version` of a file that this module created; another value means the
# file belongs to a different program or a different plantbus storage format.
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    offset INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    partition INTEGER NOT NULL,
    type TEXT NOT NULL,
    appended_at REAL NOT NULL,
    size INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_partition_offset ON events (partition, offset);
CREATE INDEX IF NOT EXISTS events_appended_at ON events (appended_at);
CREATE TABLE IF NOT EXISTS consumer_offsets (
    group_name TEXT NOT NULL,
    partition INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    PRIMARY KEY (group_name, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log_meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    partitions INTEGER NOT NULL,
    last_offset INTEGER NOT NULL,
    last_appended_at REAL NOT NULL,
    total_bytes INTEGER NOT NULL
);
"""

# The default page cache of each connection, in MiB. 64 MiB holds the event id
# index of roughly a million events (an estimate for 36-character ids). The
# cache fills as the log grows, so it is most of the memory that a backlog
# costs. Each 500-event commit dirties hundreds of pages of that randomly
# ordered index, so the default checkpoint every 1000 pages would run every
# few commits; 4000 pages (16 MiB) runs less often.
CACHE_MIB = 64
CONNECTION_PRAGMAS = (
    "PRAGMA wal_autocheckpoint = 4000",
    "PRAGMA temp_store = MEMORY",
)

INSERT_EVENT = (
    "INSERT INTO events (offset, event_id, partition, type, appended_at, size, body)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_FIND_IDS = (
    "SELECT event_id, offset, partition FROM events"
    " WHERE event_id IN (SELECT value FROM json_each(?))"
)
_UPSERT_OFFSET = (
    "INSERT INTO consumer_offsets (group_name, partition, offset) VALUES (?, ?, ?)"
    " ON CONFLICT (group_name, partition) DO UPDATE SET offset = excluded.offset"
)
_READ_META = "SELECT last_offset, last_appended_at, total_bytes FROM log_meta"
_WRITE_META = (
    "UPDATE log_meta SET last_offset = ?, last_appended_at = ?, total_bytes = ?"
)

# Rows of one event before the writer gives it an offset:
# (event_id, partition, type, body).
PreparedEvent = tuple[str, int, str, bytes]


@dataclass(slots=True)
class AppendOp:
    """Events of one `append` call, waiting for the next group commit."""

    events: list[PreparedEvent]


@dataclass(slots=True)
class CommitOp:
    """Offsets of one `commit` call, waiting for the next group commit."""

    group: str
    offsets: dict[int, int]


def describe_error(
    exc: sqlite3.Error,
    path: Path,
    action: str,
    busy_timeout: float,
    *,
    what: str = "The event log",
    error: type[PlantbusError] = BackboneError,
) -> PlantbusError:
    """Turn an SQLite error into a plantbus error that names the fix."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    where = f"{what} at {str(path)!r}"
    if name.startswith("SQLITE_FULL"):
        return error(
            f"{where} could not {action} because the disk or the database is full "
            f"(SQLite: {exc}). Free space on that volume, or delete old records "
            "with trim(max_age_seconds=..., max_bytes=...)."
            if error is BackboneError
            else f"{where} could not {action} because the disk is full "
            f"(SQLite: {exc}). Free space on that volume; the hub resumes "
            "where it stopped once it is started again."
        )
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return error(
            f"{where} could not {action} because another connection held the "
            f"database lock for more than {busy_timeout} s (SQLite: {exc}). Stop "
            "the other program that uses this file (a second hub, an sqlite3 shell "
            "or a backup), or raise `busy_timeout`."
        )
    if name.startswith("SQLITE_CANTOPEN"):
        return error(
            f"{where} could not be opened (SQLite: {exc}). Check that the folder "
            f"{str(path.parent)!r} exists and that this user may write to it."
        )
    if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
        return error(
            f"{where} is not an SQLite database or is damaged (SQLite: {exc}). "
            "Point the backbone at another file, or restore this one from a backup."
        )
    if name.startswith("SQLITE_READONLY"):
        return error(
            f"{where} is read-only (SQLite: {exc}). Give this user write access "
            "to the file, its folder and its -wal and -shm files."
        )
    return error(f"{where} could not {action} (SQLite: {exc}).")


def connect(
    path: Path, busy_timeout: float, cache_mib: int = CACHE_MIB
) -> sqlite3.Connection:
    """Open one connection in autocommit mode with WAL and durable commits."""
    connection = sqlite3.connect(
        path,
        timeout=busy_timeout,
        isolation_level=None,
        check_same_thread=False,
        cached_statements=256,
    )
    try:
        connection.execute("PRAGMA journal_mode = WAL")
        # FULL syncs the WAL on every commit, so a commit survives power loss
        # and not only the end of the process.
        connection.execute("PRAGMA synchronous = FULL")
        # A negative size is in KiB rather than pages.
        connection.execute(f"PRAGMA cache_size = -{int(cache_mib) * 1024}")
        for pragma in CONNECTION_PRAGMAS:
            connection.execute(pragma)
    except BaseException:
        connection.close()
        raise
    return connection


@contextmanager
def _immediate_transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """Run the block in a BEGIN IMMEDIATE transaction, rolled back on any error."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def create_schema(connection: sqlite3.Connection, path: Path, partitions: int) -> int:
    """Create the tables on first use, check the partitions, return the last offset."""
    with _immediate_transaction(connection):
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        tables = connection.execute(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table'"
        ).fetchone()[0]
        if version not in (0, SCHEMA_VERSION) or (version == 0 and tables > 0):
            raise BackboneError(
                f"The file {str(path)!r} is not a plantbus event log of storage "
                f"version {SCHEMA_VERSION} (its user_version is {version} and it has "
                f"{tables} tables). Point the backbone at a new file."
            )
        # executescript() would commit the open transaction, so run each statement.
        for statement in SCHEMA.split(";"):
            if statement.strip():
                connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.execute(
            "INSERT OR IGNORE INTO log_meta VALUES (1, ?, 0, 0.0, 0)", (partitions,)
        )
        stored, last_offset = connection.execute(
            "SELECT partitions, last_offset FROM log_meta"
        ).fetchone()
        if stored != partitions:
            raise BackboneError(
                f"The event log at {str(path)!r} was created with {stored} "
                f"partitions, but `partitions` is {partitions}. The partition count "
                f"of a log is fixed: set `partitions` to {stored}, or use a new file."
            )
    return int(last_offset)


def write_batch(
    connection: sqlite3.Connection, ops: Sequence[AppendOp | CommitOp]
) -> list[list[Appended] | None]:
    """Apply the appends and commits of many callers in one durable transaction.

    Returns, per op, the outcome of each appended event, or None for a commit.
    """
    with _immediate_transaction(connection):
        outcomes = _apply(connection, ops)
    return outcomes


def _apply(
    connection: sqlite3.Connection, ops: Sequence[AppendOp | CommitOp]
) -> list[list[Appended] | None]:
    last_offset, last_appended_at, total_bytes = connection.execute(
        _READ_META
    ).fetchone()
    # appended_at never goes back, even when the clock does, so that time order
    # and offset order agree and `seek(time=...)` can use one offset.
    appended_at = max(time.time(), last_appended_at)

    # Most batches hold no id that is already stored, so insert first and look
    # ids up only when the unique index rejects one: that saves one index
    # probe per event in the common case.
    connection.execute("SAVEPOINT optimistic")
    try:
        plan = _Plan(ops, {}, last_offset, appended_at, total_bytes)
        connection.executemany(INSERT_EVENT, plan.rows)
    except sqlite3.IntegrityError as exc:
        if "event_id" not in str(exc):
            raise
        connection.execute("ROLLBACK TO optimistic")
        plan = _Plan(ops, _find_stored(connection, ops), *plan.start)
        connection.executemany(INSERT_EVENT, plan.rows)
    connection.execute("RELEASE optimistic")

    if plan.rows:
        connection.execute(
            _WRITE_META, (plan.last_offset, appended_at, plan.total_bytes)
        )
    if plan.offset_rows:
        connection.executemany(_UPSERT_OFFSET, plan.offset_rows)
    return plan.outcomes


def _find_stored(
    connection: sqlite3.Connection, ops: Sequence[AppendOp | CommitOp]
) -> dict[str, tuple[int, int]]:
    event_ids = [
        event[0] for op in ops if isinstance(op, AppendOp) for event in op.events
    ]
    return {
        event_id: (offset, partition)
        for event_id, offset, partition in connection.execute(
            _FIND_IDS, (orjson.dumps(event_ids),)
        )
    }


class _Plan:
    """Offsets and rows for one transaction, and the outcome for each caller."""

    def __init__(
        self,
        ops: Sequence[AppendOp | CommitOp],
        known: dict[str, tuple[int, int]],
        last_offset: int,
        appended_at: float,
        total_bytes: int,
    ) -> None:
        self.start = (last_offset, appended_at, total_bytes)
        self.rows: list[tuple[int, str, int, str, float, int, bytes]] = []
        self.offset_rows: list[tuple[str, int, int]] = []
        self.outcomes: list[list[Appended] | None] = []

        # `known` maps ids stored earlier, and then ids seen earlier in this
        # transaction, to the (offset, partition) of their first copy.
        for op in ops:
            if isinstance(op, CommitOp):
                self.offset_rows.extend((op.group, p, o) for p, o in op.offsets.items())
                self.outcomes.append(None)
                continue
            results: list[Appended] = []
            for event_id, partition, event_type, body in op.events:
                earlier = known.get(event_id)
                if earlier is not None:
                    results.append(Appended(event_id, earlier[0], earlier[1], True))
                    continue
                last_offset += 1
                known[event_id] = (last_offset, partition)
                size = len(body)
                total_bytes += size
                self.rows.append(
                    (
                        last_offset,
                        event_id,
                        partition,
                        event_type,
                        appended_at,
                        size,
                        body,
                    )
                )
                results.append(Appended(event_id, last_offset, partition, False))
            self.outcomes.append(results)

        self.last_offset = last_offset
        self.total_bytes = total_bytes


@functools.lru_cache(maxsize=256)
def _read_sql(partitions: tuple[int, ...]) -> str:
    # The scan starts just before the first record that any requested partition
    # still has to deliver, found through the (partition, offset) index. A
    # partition that is idle far behind the others then costs one index probe
    # instead of a scan from its old position.
    firsts = " UNION ALL ".join(
        f"SELECT (SELECT offset FROM events WHERE partition = {p} AND offset > ?"
        " ORDER BY offset LIMIT 1) AS first"
        for p in partitions
    )
    positions = " ".join(f"WHEN {p} THEN ?" for p in partitions)
    return (
        "SELECT offset, partition, body, appended_at FROM events"
        f" WHERE offset > (SELECT min(first) - 1 FROM ({firsts}))"
        f" AND offset > CASE partition {positions} END"
        " ORDER BY offset LIMIT ?"
    )


def read_records(
    connection: sqlite3.Connection, positions: Mapping[int, int], limit: int
) -> list[Record]:
    """Return up to `limit` records after the given position of each partition."""
    partitions = tuple(sorted(positions))
    values = [positions[p] for p in partitions]
    cursor = connection.execute(_read_sql(partitions), (*values, *values, limit))
    return [
        Record(offset, partition, body, appended_at)
        for offset, partition, body, appended_at in cursor
    ]


def last_offset(connection: sqlite3.Connection) -> int:
    """Return the last offset ever assigned, 0 for a log that never had a record."""
    return int(connection.execute("SELECT last_offset FROM log_meta").fetchone()[0])


def committed_offsets(
    connection: sqlite3.Connection, group: str, partitions: int
) -> dict[int, int]:
    """Return the committed offset of every partition, 0 where none is stored."""
    offsets = dict.fromkeys(range(partitions), 0)
    for partition, offset in connection.execute(
        "SELECT partition, offset FROM consumer_offsets WHERE group_name = ?", (group,)
    ):
        if partition in offsets:
            offsets[partition] = offset
    return offsets


def count_lag(connection: sqlite3.Connection, group: str, partitions: int) -> int:
    """Count the records after the committed offset of each partition."""
    # One read transaction so that the offsets and the counts match.
    connection.execute("BEGIN")
    try:
        offsets = committed_offsets(connection, group, partitions)
        counts = " + ".join(
            f"(SELECT count(*) FROM events WHERE partition = {p} AND offset > ?)"
            for p in range(partitions)
        )
        row = connection.execute(
            f"SELECT {counts}", [offsets[p] for p in range(partitions)]
        ).fetchone()
    finally:
        connection.execute("COMMIT")
    return int(row[0])


def first_offset_at(connection: sqlite3.Connection, moment: float) -> int | None:
    """Return the first offset appended at or after `moment`, None if there is none."""
    row = connection.execute(
        "SELECT offset FROM events WHERE appended_at >= ?"
        " ORDER BY appended_at, offset LIMIT 1",
        (moment,),
    ).fetchone()
    return None if row is None else int(row[0])


def seek_group(
    connection: sqlite3.Connection,
    group: str,
    partitions: int,
    *,
    offset: int | None,
    moment: float | None,
) -> dict[int, int]:
    """Set every committed offset of a group so that reading resumes at a point."""
    with _immediate_transaction(connection):
        if moment is not None:
            first = first_offset_at(connection, moment)
            # Nothing appended since `moment`: resume after the last record.
            position = last_offset(connection) if first is None else first - 1
        else:
            assert offset is not None
            # Past the end there is nothing to read yet; resuming beyond it
            # would skip the records appended next.
            position = min(max(offset - 1, 0), last_offset(connection))
        offsets = dict.fromkeys(range(partitions), position)
        connection.executemany(
            _UPSERT_OFFSET, [(group, p, o) for p, o in offsets.items()]
        )
    return offsets


def trim_step(
    connection: sqlite3.Connection,
    *,
    before: float | None,
    max_bytes: int | None,
    chunk: int,
) -> int:
    """Delete up to `chunk` records beyond an age or size, oldest first; count them."""
    with _immediate_transaction(connection):
        deleted = _trim(connection, before=before, max_bytes=max_bytes, chunk=chunk)
    return deleted


def _trim(
    connection: sqlite3.Connection,
    *,
    before: float | None,
    max_bytes: int | None,
    chunk: int,
) -> int:
    last, appended_at, total_bytes = connection.execute(_READ_META).fetchone()
    candidates = connection.execute(
        "SELECT offset, size, appended_at FROM events ORDER BY offset LIMIT ?",
        (chunk,),
    ).fetchall()

    # Records are in offset order and appended_at never decreases, so the
    # records to delete are a prefix of `candidates`.
    stop = None
    freed = 0
    for offset, size, record_appended_at in candidates:
        too_old = before is not None and record_appended_at < before
        too_big = max_bytes is not None and total_bytes - freed > max_bytes
        if not (too_old or too_big):
            break
        stop = offset
        freed += size
    if stop is None:
        return 0

    cursor = connection.execute("DELETE FROM events WHERE offset <= ?", (stop,))
    connection.execute(_WRITE_META, (last, appended_at, total_bytes - freed))
    return int(cursor.rowcount)
