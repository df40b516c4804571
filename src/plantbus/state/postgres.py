"""The state store on PostgreSQL, shared by several worker processes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from plantbus.errors import PlantbusError
from plantbus.state.postgres_dead_letters import PostgresDeadLetters, jsonb
from plantbus.state.postgres_schema import migrate
from plantbus.state.store import (
    AuditRecord,
    Delivery,
    ReplayRequest,
    StateStore,
)

logger = logging.getLogger("plantbus.state")


def describe_dsn(dsn: str) -> str:
    """Return host, port, database and user of a DSN, never its password."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "an unreadable DSN"
    host = parts.get("host") or "the local socket"
    port = parts.get("port") or "5432"
    return (
        f"database {parts.get('dbname', '?')!r} at {host}:{port} "
        f"as user {parts.get('user', '?')!r}"
    )


class PostgresStateStore(PostgresDeadLetters, StateStore):
    """State store in a PostgreSQL schema, safe to share between processes."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        min_connections: int = 1,
        max_connections: int = 8,
        connect_timeout: float = 10.0,
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self.connect_timeout = connect_timeout
        self._pool = AsyncConnectionPool(
            dsn,
            min_size=min_connections,
            max_size=max_connections,
            kwargs={"autocommit": True},
            configure=self._configure,
            open=False,
            name="plantbus-state",
        )
        # Writes run one after another in call order, as in the SQLite store.
        # The redrive relies on this: a ledger write that a commit started
        # before finish_redrive is durable before the dead letter is marked
        # redriven.
        self._write_lock = asyncio.Lock()

    async def _configure(self, connection: AsyncConnection[Any]) -> None:
        await connection.execute(
            sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema))
        )

    async def start(self) -> None:
        """Connect, then create or migrate the schema."""
        try:
            await self._pool.open(wait=True, timeout=self.connect_timeout)
        except PoolTimeout as exc:
            await self._pool.close()
            raise PlantbusError(
                f"Connecting to the PostgreSQL state store, "
                f"{describe_dsn(self.dsn)}, timed out after "
                f"{self.connect_timeout:g} s. Check that the server is running "
                f"and that `state.dsn` is correct."
            ) from exc
        try:
            async with self._pool.connection() as connection:
                version = await migrate(connection, self.schema)
        except psycopg.Error as exc:
            await self._pool.close()
            raise PlantbusError(
                f"Creating the state store tables in schema {self.schema!r} "
                f"of {describe_dsn(self.dsn)} failed: {exc}. Check that the user "
                f"may create tables there."
            ) from exc
        logger.info(
            "state store on PostgreSQL, %s, schema %s version %d",
            describe_dsn(self.dsn),
            self.schema,
            version,
        )

    async def close(self) -> None:
        """Close every connection of the pool."""
        await self._pool.close()

    # Idempotency ledger

    async def delivered(
        self, sink: str, event_ids: Iterable[str]
    ) -> dict[str, str | None]:
        """Return the target reference of each event id already delivered to a sink."""
        ids = list(event_ids)
        if not ids:
            return {}
        rows = await self._fetch(
            "SELECT event_id, target_ref FROM deliveries "
            "WHERE sink = %s AND event_id = ANY(%s)",
            (sink, ids),
        )
        return dict(rows)

    async def record_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        """Record deliveries in one statement, leaving earlier entries unchanged."""
        if not deliveries:
            return
        rows = [
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
        ]
        columns = [list(column) for column in zip(*rows, strict=True)]
        # One statement for the whole batch, because unnest turns the column
        # arrays back into rows.
        await self._write(
            "INSERT INTO deliveries SELECT * FROM unnest("
            "%s::text[], %s::text[], %s::text[], %s::float8[], %s::float8[], "
            "%s::text[], %s::text[]) ON CONFLICT DO NOTHING",
            columns,
        )

    async def forget_delivery(self, sink: str, event_id: str) -> None:
        """Remove one ledger entry."""
        await self._write(
            "DELETE FROM deliveries WHERE sink = %s AND event_id = %s",
            (sink, event_id),
        )

    async def deliveries(self, *, sink: str | None = None) -> list[Delivery]:
        """Return recorded deliveries, oldest first."""
        query = (
            "SELECT sink, event_id, target_ref, delivered_at, latency, event_type, "
            "pipeline FROM deliveries"
        )
        parameters: tuple[Any, ...] = ()
        if sink is not None:
            query += " WHERE sink = %s"
            parameters = (sink,)
        rows = await self._fetch(query + " ORDER BY delivered_at", parameters)
        return [Delivery(*row) for row in rows]

    async def forget_deliveries(self, sink: str, event_ids: Sequence[str]) -> int:
        """Remove the ledger entries of events at a sink and count them."""
        if not event_ids:
            return 0
        return await self._write(
            "DELETE FROM deliveries WHERE sink = %s AND event_id = ANY(%s)",
            (sink, list(event_ids)),
        )

    # Replay requests

    async def request_replay(self, request: ReplayRequest) -> int:
        """Store a replay request for its pipeline to apply and return its id."""
        async with self._write_lock, self._pool.connection() as connection:
            cursor = await connection.execute(
                "INSERT INTO replays (pipeline, from_offset, from_time, force, "
                "requested_at) VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (
                    request.pipeline,
                    request.from_offset,
                    request.from_time,
                    request.force,
                    request.requested_at or time.time(),
                ),
            )
            row = await cursor.fetchone()
        assert row is not None
        return int(row[0])

    async def pending_replays(self, pipeline: str) -> list[ReplayRequest]:
        """Return a pipeline's replay requests not yet applied, oldest first."""
        rows = await self._fetch(
            "SELECT pipeline, from_offset, from_time, force, requested_at, id "
            "FROM replays WHERE pipeline = %s AND applied_at IS NULL ORDER BY id",
            (pipeline,),
        )
        return [
            ReplayRequest(name, offset, moment, force, requested_at, request_id)
            for name, offset, moment, force, requested_at, request_id in rows
        ]

    async def finish_replay(self, request_id: int, positions: dict[int, int]) -> None:
        """Mark a replay request as applied, with the offsets the group moved to."""
        await self._write(
            "UPDATE replays SET applied_at = %s, positions = %s WHERE id = %s",
            (
                time.time(),
                jsonb({str(p): o for p, o in positions.items()}),
                request_id,
            ),
        )

    # Audit log

    async def add_audit(self, record: AuditRecord) -> None:
        """Append a record to the audit log."""
        await self._write(
            "INSERT INTO audit (at, actor, action, target, details) "
            "VALUES (%s, %s, %s, %s, %s)",
            (
                record.at,
                record.actor,
                record.action,
                record.target,
                jsonb(record.details),
            ),
        )

    async def audit_log(self, *, limit: int = 1000) -> list[AuditRecord]:
        """Return the newest audit records, oldest first."""
        rows = await self._fetch(
            "SELECT at, actor, action, target, details FROM audit "
            "ORDER BY id DESC LIMIT %s",
            (limit,),
        )
        return [
            AuditRecord(at, actor, action, target, details)
            for at, actor, action, target, details in reversed(rows)
        ]
