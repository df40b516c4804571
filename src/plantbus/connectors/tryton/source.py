"""Publish released Tryton productions as `production.order.released.v1` events.

The source polls Tryton for productions in state waiting, assigned or running
that changed since the last poll (a `write_date` cursor, kept in a small JSON
file when one is given). The event id of a production is a UUID 5 of the
database URL and the production id, so publishing the same production again
after a restart or a lost cursor is dropped by the log's de-duplication.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from plantbus.connectors.base import Ingest, Reject, Source
from plantbus.connectors.tryton.client import TrytonClient
from plantbus.errors import EventError, RetryableDeliveryError
from plantbus.events.envelope import Event, format_time
from plantbus.state.dead_letters import DeadLetter

logger = logging.getLogger("plantbus.connectors.tryton")

RELEASED = "production.order.released.v1"
RELEASED_STATES = ("waiting", "assigned", "running")
_FIELDS = (
    "number",
    "state",
    "quantity",
    "unit.symbol",
    "product.code",
    "warehouse.code",
    "bom.code",
    "routing.name",
    "planned_start_date",
    "planned_date",
    "reference",
    "create_date",
    "write_date",
)
# Namespace of the ids of events that this source derives from Tryton records.
_NAMESPACE = uuid.UUID("5f0b6a57-9a54-4c39-9d0e-2f8f3f1c6a11")


def decimal_text(value: float | Decimal) -> str:
    """Format a quantity as a plain decimal string such as '12.5' (no exponent)."""
    number = Decimal(str(value)).normalize()
    return format(number, "f")


def released_event_id(database_url: str, production_id: int) -> str:
    """Return the stable event id for the release of one production."""
    return str(uuid.uuid5(_NAMESPACE, f"{database_url}#production,{production_id}"))


def _midnight_utc(day: dt.date | None) -> str | None:
    if day is None:
        return None
    return format_time(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC))


class TrytonOrderSource(Source):
    """Poll Tryton for released productions and ingest one event per production."""

    can_wait = True

    def __init__(
        self,
        name: str,
        client: TrytonClient,
        *,
        poll_seconds: float = 5.0,
        cursor_file: Path | None = None,
        batch_size: int = 200,
    ) -> None:
        self.name = name
        self.client = client
        self.poll_seconds = poll_seconds
        self.cursor_file = cursor_file
        self.batch_size = batch_size
        self.cursor: dt.datetime | None = self._load_cursor()
        self._published: set[int] = set()

    @property
    def source_uri(self) -> str:
        """Return the CloudEvents `source` of the events: the database URL."""
        return f"{self.client.url}/{self.client.database}"

    def _load_cursor(self) -> dt.datetime | None:
        if self.cursor_file is None or not self.cursor_file.exists():
            return None
        document = json.loads(self.cursor_file.read_text("utf-8"))
        return dt.datetime.fromisoformat(document["write_date"])

    def _save_cursor(self) -> None:
        if self.cursor_file is None or self.cursor is None:
            return
        partial = self.cursor_file.with_suffix(".partial")
        partial.write_text(
            json.dumps({"write_date": self.cursor.isoformat()}), encoding="utf-8"
        )
        partial.replace(self.cursor_file)

    async def run(self, ingest: Ingest, reject: Reject, stop: asyncio.Event) -> None:
        """Poll every `poll_seconds` until `stop` is set."""
        logger.info("Tryton order source %s polls %s", self.name, self.source_uri)
        while not stop.is_set():
            try:
                await self.poll(ingest, reject)
            except RetryableDeliveryError as exc:
                logger.warning("Polling Tryton failed, retrying next poll: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_seconds)
        logger.info("Tryton order source %s stopped", self.name)

    async def poll(self, ingest: Ingest, reject: Reject) -> int:
        """Ingest the productions released since the cursor; return how many."""
        events, newest = await self.fetch()
        if events:
            try:
                await ingest(events)
            except EventError as exc:
                for event in events:
                    await reject(
                        DeadLetter(
                            stage="ingest",
                            error=str(exc),
                            payload=event.to_json(),
                            source=self.name,
                            content_type="application/cloudevents+json",
                            event_id=event.id,
                            event_type=event.type,
                        )
                    )
            self._published.update(
                int(event.extensions["trytonid"]) for event in events
            )
        if newest is not None:
            self.cursor = newest
            self._save_cursor()
        return len(events)

    async def fetch(self) -> tuple[list[Event], dt.datetime | None]:
        """Return events for released productions not yet published, and the cursor."""
        domain: list[Any] = [("state", "in", list(RELEASED_STATES))]
        if self.cursor is not None:
            # >= and not >: several productions can share one write_date.
            domain.append(
                [
                    "OR",
                    ("write_date", ">=", self.cursor),
                    ("create_date", ">=", self.cursor),
                ]
            )
        rows = await self.client.search_read(
            "production",
            domain,
            _FIELDS,
            order=[("write_date", "ASC"), ("id", "ASC")],
            limit=self.batch_size,
        )
        events = []
        newest = self.cursor
        for row in rows:
            changed = row["write_date"] or row["create_date"]
            if newest is None or changed > newest:
                newest = changed
            if row["id"] in self._published:
                continue
            events.append(self.event(row, changed))
        return events, newest

    def event(self, row: dict[str, Any], changed: dt.datetime) -> Event:
        """Build the release event of one production row."""
        data: dict[str, Any] = {
            "order_id": row["number"],
            "item": row["product."]["code"],
            "quantity": {
                "value": decimal_text(row["quantity"]),
                "unit": row["unit."]["symbol"],
            },
            "plant": row["warehouse."]["code"],
            "warehouse": row["warehouse."]["code"],
            "erp_ref": f"production,{row['id']}",
        }
        optional = {
            "bom": (row.get("bom.") or {}).get("code"),
            "routing": (row.get("routing.") or {}).get("name"),
            "planned_start": _midnight_utc(row["planned_start_date"]),
            "planned_end": _midnight_utc(row["planned_date"]),
            "description": row.get("reference"),
        }
        data.update({key: value for key, value in optional.items() if value})
        event = Event(
            id=released_event_id(self.source_uri, row["id"]),
            source=self.source_uri,
            type=RELEASED,
            data=data,
            subject=row["number"],
            time=format_time(changed),
            correlationid=row["number"],
            partitionkey=row["number"],
            plant=data["plant"],
        )
        # The Tryton id, so that a re-poll skips what this process published.
        event.extensions["trytonid"] = row["id"]
        return event
