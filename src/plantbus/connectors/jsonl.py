"""A sink that appends events to a JSON Lines file, such as an analytics drop."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from plantbus.connectors.base import Sink
from plantbus.errors import RetryableDeliveryError
from plantbus.events.envelope import Event


class JsonLinesSink(Sink):
    """Append each event as one CloudEvents JSON line; fsync before confirming.

    Deliveries that arrive while a write is under way share the next write and
    fsync, so the sink keeps up with many keys at once without one fsync per
    line.
    """

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Create the folder of the file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)

    async def deliver(self, event: Event) -> str | None:
        """Append the event and return once it is on disk.

        NOTE: the file has no index of event ids, so a crash between the write
        and the ledger entry can leave the same event on two lines; readers
        de-duplicate by `id`.
        """
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((event.to_json() + b"\n", written))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending())
        try:
            await written
        except OSError as exc:
            raise RetryableDeliveryError(
                f"Cannot append event {event.id!r} to {str(self.path)!r}: {exc}."
            ) from exc
        return f"file:{self.path.name}"

    async def _write_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await asyncio.to_thread(
                    self._append, b"".join(line for line, _ in batch)
                )
            except OSError as exc:
                for _, written in batch:
                    written.set_exception(exc)
                continue
            for _, written in batch:
                written.set_result(None)

    def _append(self, lines: bytes) -> None:
        with self.path.open("ab") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())
