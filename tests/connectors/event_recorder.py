"""Test helper: ingest and reject callables that record what a source produces."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from plantbus.backbone.log import Appended
from plantbus.connectors.base import Source
from plantbus.events.catalogue import Catalogue
from plantbus.events.envelope import Event
from plantbus.state.dead_letters import DeadLetter

_CATALOGUE = Catalogue.load()


@dataclass
class Recorder:
    """Ingest and reject callables that validate events and store them by id."""

    events: dict[str, Event] = field(default_factory=dict)
    order: list[Event] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def ingest(self, events: Sequence[Event]) -> list[Appended]:
        appended = []
        for event in events:
            _CATALOGUE.validate(event)
            duplicate = event.id in self.events
            if not duplicate:
                self.events[event.id] = event
                self.order.append(event)
            appended.append(Appended(event.id, len(self.events), 0, duplicate))
        self.changed.set()
        return appended

    async def reject(self, letter: DeadLetter) -> None:
        self.dead_letters.append(letter)
        self.changed.set()

    async def wait_until(
        self, check: Callable[[], bool], timeout: float = 15.0
    ) -> None:
        """Wait until `check()` is true, trying it again after every change."""
        async with asyncio.timeout(timeout):
            while not check():
                self.changed.clear()
                await self.changed.wait()

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        """Wait until `count` distinct events (duplicates not counted) have arrived."""
        await self.wait_until(lambda: len(self.order) >= count, timeout)

    @contextlib.asynccontextmanager
    async def running(self, source: Source, stop_timeout: float) -> AsyncIterator[None]:
        """Run `source` into this recorder until the block exits, then stop it.

        Raises TimeoutError if the source takes longer than `stop_timeout` seconds
        to stop.
        """
        stop = asyncio.Event()
        task = asyncio.create_task(source.run(self.ingest, self.reject, stop))
        try:
            yield
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=stop_timeout)
