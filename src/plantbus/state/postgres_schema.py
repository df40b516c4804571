"""Tables of the PostgreSQL state store and the migrations that create them.

Each migration runs once, in order, inside one transaction, and is recorded in
the `plantbus_schema_version` table. Worker processes that start at the same
time serialize on a transaction-level advisory lock, so only one of them runs a
migration and the others find it recorded.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from psycopg import AsyncConnection, sql

from plantbus.errors import PlantbusError

logger = logging.getLogger("plantbus.state")

# Key of the advisory lock held while migrations run (the ASCII bytes "pbschema").
MIGRATION_LOCK_KEY = 0x7062736368656D61

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS plantbus_schema_version (
    version integer PRIMARY KEY,
    applied_at double precision NOT NULL
)
"""

# Migration N brings the schema from version N - 1 to N. Never change a
# migration that has shipped; append a new one instead.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE deliveries (
            sink text NOT NULL,
            event_id text NOT NULL,
            target_ref text,
            delivered_at double precision NOT NULL,
            latency double precision NOT NULL,
            event_type text NOT NULL DEFAULT '',
            pipeline text NOT NULL DEFAULT '',
            PRIMARY KEY (sink, event_id)
        )
        """,
        """
        CREATE TABLE dead_letters (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            created_at double precision NOT NULL,
            status text NOT NULL DEFAULT 'open',
            stage text NOT NULL,
            error text NOT NULL,
            payload bytea NOT NULL,
            source text NOT NULL,
            content_type text NOT NULL,
            headers jsonb NOT NULL,
            event_id text,
            event_type text,
            pipeline text,
            sink text,
            log_offset bigint,
            attempts jsonb NOT NULL,
            details jsonb NOT NULL
        )
        """,
        "CREATE INDEX dead_letters_status ON dead_letters (status, created_at)",
        "CREATE INDEX dead_letters_pipeline ON dead_letters (pipeline, status)",
        """
        CREATE TABLE parked_keys (
            pipeline text NOT NULL,
            key text NOT NULL,
            letter_id bigint NOT NULL,
            parked_at double precision NOT NULL,
            PRIMARY KEY (pipeline, key)
        )
        """,
        """
        CREATE TABLE audit (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at double precision NOT NULL,
            actor text NOT NULL,
            action text NOT NULL,
            target text NOT NULL,
            details jsonb NOT NULL
        )
        """,
        """
        CREATE TABLE replays (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            pipeline text NOT NULL,
            from_offset bigint,
            from_time double precision,
            force boolean NOT NULL,
            requested_at double precision NOT NULL,
            applied_at double precision,
            positions jsonb
        )
        """,
        "CREATE INDEX replays_pending ON replays (pipeline) WHERE applied_at IS NULL",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)


async def migrate(connection: AsyncConnection[Any], schema: str) -> int:
    """Create the schema and apply the migrations it lacks; return its version."""
    async with connection.transaction():
        await connection.execute(
            "SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,)
        )
        await connection.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
        )
        await connection.execute(
            sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema))
        )
        await connection.execute(_VERSION_TABLE)
        cursor = await connection.execute(
            "SELECT coalesce(max(version), 0) FROM plantbus_schema_version"
        )
        row = await cursor.fetchone()
        current = int(row[0]) if row else 0
        if current > SCHEMA_VERSION:
            raise PlantbusError(
                f"The state store schema {schema!r} is at version {current}, newer "
                f"than version {SCHEMA_VERSION} that this plantbus supports, "
                f"so upgrade plantbus on this host before starting it."
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version - 1]:
                await connection.execute(statement)
            await connection.execute(
                "INSERT INTO plantbus_schema_version VALUES (%s, %s)",
                (version, time.time()),
            )
            logger.info("state store schema %s migrated to version %d", schema, version)
    return SCHEMA_VERSION
