"""Fixtures for the Tryton connector tests. tests/conftest.py starts the trytond."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal

import pytest

from plantbus.connectors.tryton.client import TrytonClient
from plantbus.sim import erp_setup
from plantbus.sim.trytond_server import ADMIN_LOGIN, ADMIN_PASSWORD, TrytondServer


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
