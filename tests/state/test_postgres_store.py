"""PostgresStateStore: the shared StateStore contract plus PostgreSQL behaviour.

Each test module gets its own database (see conftest.py) and each test its own
schema in it, so tests can run side by side with other suites on one server.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest

from plantbus.errors import PlantbusError
from plantbus.state.postgres import PostgresStateStore
from plantbus.state.postgres_schema import SCHEMA_VERSION
from plantbus.state.store import StateStore

from .contract import *  # noqa: F403
from .contract import OpenStore, delivery


@pytest.fixture
def schema() -> str:
    return f"test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def open_store(postgres_dsn: str, schema: str) -> AsyncIterator[OpenStore]:
    """Open started PostgresStateStore handles on one schema; close them afterwards."""
    handles: list[PostgresStateStore] = []

    async def opener() -> StateStore:
        store = PostgresStateStore(postgres_dsn, schema=schema, max_connections=4)
        await store.start()
        handles.append(store)
        return store

    yield opener
    for handle in handles:
        await handle.close()


@pytest.fixture
async def store(open_store: OpenStore) -> StateStore:
    """Return a started, empty PostgresStateStore."""
    return await open_store()


def _versions(dsn: str, schema: str) -> list[int]:
    with psycopg.connect(dsn) as connection:
        rows = connection.execute(
            f'SELECT version FROM "{schema}".plantbus_schema_version ORDER BY 1'
        ).fetchall()
    return [row[0] for row in rows]


async def test_postgres_store_records_schema_version_once(
    postgres_dsn: str, schema: str, open_store: OpenStore
) -> None:
    await open_store()
    await open_store()

    assert _versions(postgres_dsn, schema) == list(range(1, SCHEMA_VERSION + 1))


async def test_postgres_store_concurrent_starts_create_schema_once(
    postgres_dsn: str, schema: str
) -> None:
    stores = [
        PostgresStateStore(postgres_dsn, schema=schema, max_connections=2)
        for _ in range(4)
    ]

    try:
        await asyncio.gather(*(store.start() for store in stores))
        await stores[0].record_deliveries([delivery("erp", "ev-1")])
        found = await stores[3].delivered("erp", ["ev-1"])
    finally:
        for store in stores:
            await store.close()

    assert found == {"ev-1": None}
    assert _versions(postgres_dsn, schema) == list(range(1, SCHEMA_VERSION + 1))


async def test_postgres_store_newer_schema_raises(
    postgres_dsn: str, schema: str, open_store: OpenStore
) -> None:
    await open_store()
    with psycopg.connect(postgres_dsn) as connection:
        connection.execute(
            f'INSERT INTO "{schema}".plantbus_schema_version VALUES (%s, 0)',
            (SCHEMA_VERSION + 1,),
        )

    with pytest.raises(PlantbusError, match=r"newer than version .* upgrade"):
        await open_store()


async def test_postgres_store_unreachable_names_server_not_password() -> None:
    # A port that was free a moment ago: nothing listens there.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dsn = f"postgresql://postgres:s3cret@127.0.0.1:{port}/plantbus"
    store = PostgresStateStore(dsn, connect_timeout=1.0)

    with pytest.raises(PlantbusError) as raised:
        await store.start()

    message = str(raised.value)
    assert f"127.0.0.1:{port}" in message
    assert "'plantbus'" in message
    assert "state.dsn" in message
    assert "s3cret" not in message


async def test_postgres_store_schemas_are_isolated(
    postgres_dsn: str, store: StateStore
) -> None:
    other = PostgresStateStore(postgres_dsn, schema=f"test_{uuid.uuid4().hex[:12]}")
    await other.start()
    try:
        await store.record_deliveries([delivery("erp", "ev-1")])
        found = await other.delivered("erp", ["ev-1"])
    finally:
        await other.close()

    assert found == {}
