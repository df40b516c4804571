"""Fixtures for state tests on PostgreSQL: one fresh database per test module."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

# The machine's PostgreSQL server; tests create and drop their own databases.
SERVER_DSN = os.environ.get(
    "PLANTBUS_TEST_POSTGRES", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)


def advisory_lock_holders(dsn: str, key: int) -> dict[int, int]:
    """Return lock number -> server pid of the granted advisory locks (key, number)."""
    with psycopg.connect(dsn) as connection:
        rows = connection.execute(
            "SELECT objid::bigint, pid FROM pg_locks WHERE locktype = 'advisory' "
            "AND granted AND objsubid = 2 AND classid = %s::bigint::oid",
            (key,),
        ).fetchall()
    return dict(rows)


@pytest.fixture(scope="module")
def postgres_dsn() -> Iterator[str]:
    """Create a uniquely named database for one test module; drop it afterwards."""
    name = f"plantbus_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(SERVER_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL at {SERVER_DSN!r} is not reachable: {exc}. Start it, or "
            f"set PLANTBUS_TEST_POSTGRES to the DSN of a server where this user "
            f"may create databases."
        )
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield psycopg.conninfo.make_conninfo(SERVER_DSN, dbname=name)
    with psycopg.connect(SERVER_DSN, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)
            )
        )
