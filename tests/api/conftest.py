"""Fixtures for the API tests: a real event log, an ingest over it, API clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from plantbus.api.app import DEFAULT_MAX_BODY_BYTES, create_app
from plantbus.connectors.base import Ingest
from plantbus.events.catalogue import Catalogue

from .support import (
    INGEST_KIND,
    LOG_KIND,
    ReadableLog,
    build_ingest,
    open_event_log,
    samples_root,
)


def pytest_report_header() -> str:
    return f"tests/api: event log = {LOG_KIND}, ingest = {INGEST_KIND}"


@pytest.fixture
def samples_dir() -> Path:
    return samples_root()


@pytest.fixture(scope="session")
def catalogue() -> Catalogue:
    return Catalogue.load()


@pytest.fixture
async def event_log(tmp_path: Path) -> AsyncIterator[ReadableLog]:
    async with open_event_log(tmp_path) as log:
        yield log


ClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def make_client(
    event_log: ReadableLog, catalogue: Catalogue
) -> AsyncIterator[ClientFactory]:
    clients: list[httpx.AsyncClient] = []

    async def make(
        *,
        allow_unknown_types: bool = False,
        ingest: Ingest | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> httpx.AsyncClient:
        app = create_app(
            ingest or build_ingest(event_log, catalogue, allow_unknown_types),
            catalogue=catalogue,
            allow_unknown_types=allow_unknown_types,
            max_body_bytes=max_body_bytes,
        )
        # raise_app_exceptions=False lets the 500 handler respond like a server.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        client = httpx.AsyncClient(transport=transport, base_url="http://plantbus.test")
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def client(make_client: ClientFactory) -> httpx.AsyncClient:
    return await make_client()


@pytest.fixture
async def open_client(make_client: ClientFactory) -> httpx.AsyncClient:
    """A client of an app that accepts event types outside the catalogue."""
    return await make_client(allow_unknown_types=True)
