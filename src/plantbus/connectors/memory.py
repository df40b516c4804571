"""A sink that keeps delivered events in memory, for tests and benchmarks."""

from __future__ import annotations

from plantbus.connectors.base import Sink
from plantbus.events.envelope import Event


class MemorySink(Sink):
    """Keep every delivered event in a list; an event id is kept once."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[Event] = []
        self._ids: set[str] = set()

    async def deliver(self, event: Event) -> str | None:
        """Append the event unless its id is already there."""
        if event.id not in self._ids:
            self._ids.add(event.id)
            self.events.append(event)
        return f"memory:{event.id}"
