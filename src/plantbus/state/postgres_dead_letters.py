"""Dead letters and parked keys of the PostgreSQL state store.

`PostgresStateStore` inherits these methods; they share its connection pool and
its write lock, so that writes run in call order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from plantbus.state.dead_letters import DeadLetter
from plantbus.state.store import (
    DeadLetterFilter,
    check_status,
    dead_letter_from_row,
    dead_letter_where,
)

logger = logging.getLogger("plantbus.state")

_DEAD_LETTER_COLUMNS = (
    "id, created_at, status, stage, error, payload, source, content_type, "
    "headers, event_id, event_type, pipeline, sink, log_offset, attempts, details"
)


def jsonb(value: Any) -> Jsonb:
    """Wrap a value as a jsonb parameter, encoded as the SQLite store encodes it.

    orjson with default=str stores datetimes or Decimals in details as strings
    instead of failing.
    """
    return Jsonb(value, dumps=lambda v: orjson.dumps(v, default=str).decode())


class PostgresDeadLetters:
    """The dead-letter and parked-key methods of the PostgreSQL state store."""

    _pool: AsyncConnectionPool[AsyncConnection[TupleRow]]
    _write_lock: asyncio.Lock

    async def _fetch(self, query: str, parameters: Sequence[Any]) -> list[Any]:
        async with self._pool.connection() as connection:
            cursor = await connection.execute(query, parameters)
            return await cursor.fetchall()

    async def _write(self, query: str, parameters: Sequence[Any]) -> int:
        """Run one statement and return the rows it changed."""
        async with self._write_lock, self._pool.connection() as connection:
            cursor = await connection.execute(query, parameters)
            return cursor.rowcount

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
        async with self._write_lock, self._pool.connection() as connection:
            cursor = await connection.execute(
                "INSERT INTO dead_letters (created_at, status, stage, error, "
                "payload, source, content_type, headers, event_id, event_type, "
                "pipeline, sink, log_offset, attempts, details) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "RETURNING id",
                (
                    letter.created_at,
                    status,
                    letter.stage,
                    letter.error,
                    letter.payload,
                    letter.source,
                    letter.content_type,
                    jsonb(letter.headers),
                    letter.event_id,
                    letter.event_type,
                    letter.pipeline,
                    letter.sink,
                    letter.offset,
                    jsonb([[a.at, a.error] for a in letter.attempts]),
                    jsonb(letter.details),
                ),
            )
            row = await cursor.fetchone()
        assert row is not None
        letter.id = int(row[0])
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
        condition, parameters = dead_letter_where(where, "format")
        query = f"SELECT {_DEAD_LETTER_COLUMNS} FROM dead_letters{condition}"
        query += " ORDER BY id LIMIT %s"
        parameters.append(limit)
        return [
            dead_letter_from_row(row, _as_is)
            for row in await self._fetch(query, parameters)
        ]

    async def claim_dead_letter(
        self, letter_id: int, expected: str, status: str
    ) -> bool:
        """Change a dead letter's status only if it is `expected`; return success.

        The UPDATE checks the status again after it has locked the row, so of
        two processes claiming one dead letter at once exactly one succeeds.
        """
        check_status(status)
        changed = await self._write(
            "UPDATE dead_letters SET status = %s WHERE id = %s AND status = %s",
            (status, letter_id, expected),
        )
        return changed == 1

    async def set_dead_letter_status(self, letter_id: int, status: str) -> None:
        """Mark a dead letter as open, redriving, redriven or discarded."""
        check_status(status)
        await self._write(
            "UPDATE dead_letters SET status = %s WHERE id = %s", (status, letter_id)
        )

    async def pending_redrives(self, pipeline: str) -> list[DeadLetter]:
        """Return the dead letters of a pipeline waiting for redrive, oldest first."""
        return await self.dead_letters(
            DeadLetterFilter(status="redriving", pipeline=pipeline)
        )

    async def finish_redrive(self, letter_id: int, outcome: str) -> None:
        """Mark a dead letter as redriven and store how the redrive ended."""
        await self._write(
            "UPDATE dead_letters SET status = 'redriven', details = details || "
            "jsonb_build_object('redrive_outcome', %s::text, "
            "'redriven_at', %s::float8) WHERE id = %s",
            (outcome, time.time(), letter_id),
        )

    # Parked partition keys

    async def park_key(self, pipeline: str, key: str, letter_id: int) -> None:
        """Hold back a partition key's later events behind a dead letter."""
        await self._write(
            "INSERT INTO parked_keys (pipeline, key, letter_id, parked_at) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (pipeline, key) DO UPDATE SET "
            "letter_id = excluded.letter_id, parked_at = excluded.parked_at",
            (pipeline, key, letter_id, time.time()),
        )

    async def unpark_key(self, pipeline: str, key: str) -> None:
        """Let a partition key's events flow again."""
        await self._write(
            "DELETE FROM parked_keys WHERE pipeline = %s AND key = %s",
            (pipeline, key),
        )

    async def parked_keys(self, pipeline: str) -> dict[str, int]:
        """Return each parked key of a pipeline with the dead letter it waits on."""
        rows = await self._fetch(
            "SELECT key, letter_id FROM parked_keys WHERE pipeline = %s",
            (pipeline,),
        )
        return {key: int(letter_id) for key, letter_id in rows}


def _as_is(value: Any) -> Any:
    # psycopg already decodes jsonb columns.
    return value
