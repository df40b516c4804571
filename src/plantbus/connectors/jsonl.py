"""A sink that appends events to a JSON Lines file, such as an analytics drop."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from plantbus.connectors.base import Sink
from plantbus.errors import RetryableDeliveryError
from plantbus.events.envelope import Event


class JsonLinesSink(Sink):
    """Append each event as one CloudEvents JSON line and fsync the file."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Create the folder of the file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)

    async def deliver(self, event: Event) -> str | None:
        """Append the event; a line is written again only if a crash hid the first.

        NOTE: the file has no index of event ids, so a crash between the write
        and the ledger entry can leave the same event on two lines; readers
        de-duplicate by `id`.
        """
        line = event.to_json() + b"\n"
        async with self._lock:
            try:
                await asyncio.to_thread(self._append, line)
            except OSError as exc:
                raise RetryableDeliveryError(
                    f"Cannot append event {event.id!r} to {str(self.path)!r}: {exc}."
                ) from exc
        return f"file:{self.path.name}"

    def _append(self, line: bytes) -> None:
        with self.path.open("ab") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
