"""Fixtures for the Tryton connector tests: one real trytond per test session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from decimal import Decimal

import pytest

from plantbus.connectors.tryton.client import TrytonClient
from plantbus.sim import erp_setup
from plantbus.sim.erp_setup import create_database
from plantbus.sim.trytond_server import ADMIN_LOGIN, ADMIN_PASSWORD, TrytondServer


@pytest.fixture(scope="session")
def tryton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrytondServer]:
    """Start trytond on a fresh copy of the demo database for the whole session."""
    folder = tmp_path_factory.mktemp("tryton")
    database = create_database(folder / "db", "plantbus_test")
    server = TrytondServer(database, folder / "work")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def tryton(tryton_server: TrytondServer) -> AsyncIterator[TrytonClient]:
    """Return a logged-in client of the session's trytond."""
    client = TrytonClient(
        tryton_server.url, tryton_server.database, ADMIN_LOGIN, ADMIN_PASSWORD
    )
    await client.start()
    yield client
    await client.close()


@pytest.fixture
def release(tryton: TrytonClient) -> Callable[..., Awaitable[list[str]]]:
    """Return a function that releases production orders and returns their numbers."""

    async def release_orders(
        plant: str = "P1", count: int = 1, item: str = "FG-100", quantity: str = "10"
    ) -> list[str]:
        return await erp_setup.release_orders(
            tryton, plant, count, items=[item], quantity=Decimal(quantity)
        )

    return release_orders
