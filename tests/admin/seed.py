"""Dead letters stored in a real state store before the operator tools run."""

from __future__ import annotations

import asyncio
from pathlib import Path

from plantbus.config import load_hub
from plantbus.state.dead_letters import Attempt, DeadLetter
from plantbus.state.sqlite import SqliteStateStore
from plantbus.state.store import AuditRecord, DeadLetterFilter

from .conftest import PIPELINE, progressed

LONG_ERROR = "work order WO1 is closed in the ERP; " + "reopen it first. " * 10
BINARY = bytes(range(256)) * 2


def seed(hub_file: Path) -> dict[str, int]:
    """Store one delivery, one folder and one HTTP dead letter; return their ids."""
    return asyncio.run(_seed(hub_file))


async def _seed(hub_file: Path) -> dict[str, int]:
    state = await _open(hub_file)
    event = progressed("WO1", 1)
    letters = {
        "delivery": DeadLetter(
            stage="deliver:erp",
            error=LONG_ERROR,
            payload=event.to_json(),
            source=event.source,
            content_type="application/cloudevents+json",
            event_id=event.id,
            event_type=event.type,
            pipeline=PIPELINE,
            sink="erp",
            offset=1,
            attempts=[Attempt(1.0e9, "closed"), Attempt(1.0e9 + 1, "still closed")],
        ),
        "folder": DeadLetter(
            stage="ingest",
            error="not valid B2MML: element OperationsRequest is missing",
            payload=b"<ProductionSchedule/>",
            source="mes-exports",
            content_type="application/xml",
            details={"file": "orders.xml"},
        ),
        "http": DeadLetter(
            stage="ingest",
            error="not a JSON document",
            payload=BINARY,
            source="shopfloor",
        ),
    }
    ids = {
        name: await state.add_dead_letter(letter) for name, letter in letters.items()
    }
    await state.close()
    return ids


async def _open(hub_file: Path) -> SqliteStateStore:
    data_dir = load_hub(hub_file).hub.data_dir
    state = SqliteStateStore(data_dir / "state.sqlite")
    await state.start()
    return state


def letters(hub_file: Path, status: str | None = None) -> list[DeadLetter]:
    """Return the stored dead letters in one status, or all."""

    async def read() -> list[DeadLetter]:
        state = await _open(hub_file)
        found = await state.dead_letters(DeadLetterFilter(status=status))
        await state.close()
        return found

    return asyncio.run(read())


def audit(hub_file: Path) -> list[AuditRecord]:
    """Return the audit log, oldest first."""

    async def read() -> list[AuditRecord]:
        state = await _open(hub_file)
        found = await state.audit_log()
        await state.close()
        return found

    return asyncio.run(read())
