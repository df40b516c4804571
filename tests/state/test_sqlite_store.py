"""SqliteStateStore: the shared StateStore contract plus SQLite-specific behaviour."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from plantbus.state.sqlite import SqliteStateStore
from plantbus.state.store import StateStore

from .contract import *  # noqa: F403
from .contract import OpenStore


@pytest.fixture
async def open_store(tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Open started SqliteStateStore handles on one file; close them afterwards."""
    handles: list[SqliteStateStore] = []

    async def opener() -> StateStore:
        store = SqliteStateStore(tmp_path / "state.sqlite")
        await store.start()
        handles.append(store)
        return store

    yield opener
    for handle in handles:
        await handle.close()


@pytest.fixture
async def store(open_store: OpenStore) -> StateStore:
    """Return a started, empty SqliteStateStore."""
    return await open_store()
