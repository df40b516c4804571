"""Fixtures for the hostile-input tests: a real API over a real log, the CLI."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from plantbus.api.app import create_app
from plantbus.backbone.sqlite import SqliteLog
from plantbus.config.model import ApiConfig
from plantbus.events.catalogue import Catalogue
from plantbus.ingest import Ingestor


@pytest.fixture(scope="session")
def catalogue() -> Catalogue:
    return Catalogue.load()


@pytest.fixture
async def event_log(tmp_path: Path) -> AsyncIterator[SqliteLog]:
    log = SqliteLog(tmp_path / "log.sqlite", partitions=16)
    await log.start()
    try:
        yield log
    finally:
        await log.close()


@pytest.fixture
async def client(
    event_log: SqliteLog, catalogue: Catalogue
) -> AsyncIterator[httpx.AsyncClient]:
    """Return a client of the API as a hub serves it, over a real SQLite log."""
    # The body limit of a hub file's `api` section, 10 MiB unless set.
    app = create_app(
        Ingestor(event_log, catalogue),
        catalogue=catalogue,
        max_body_bytes=ApiConfig().max_body_bytes,
    )
    # raise_app_exceptions=False makes a crash in a route come back as the
    # 500 that a real server sends, so tests can assert on the status.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://plantbus.test"
    ) as api_client:
        yield api_client


@pytest.fixture(scope="session")
def plantbus_command() -> Path:
    """Return the `plantbus` console script of the running interpreter."""
    return Path(sys.executable).with_name("plantbus")
