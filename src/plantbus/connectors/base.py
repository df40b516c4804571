"""The interfaces of sources and sinks.

A source turns messages from outside into events and hands them to an
`Ingest` callable, which validates and appends them to the log. A sink
delivers one event to a target system and returns the reference that the
target gave it.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from plantbus.backbone.log import Appended
from plantbus.events.envelope import Event
from plantbus.state.dead_letters import DeadLetter

# Validate and append events; raises plantbus.errors.EventError on bad input.
Ingest = Callable[[Sequence[Event]], Awaitable[list[Appended]]]
# Store input that could not become events, with its original bytes.
Reject = Callable[[DeadLetter], Awaitable[None]]


class Source(ABC):
    """Something outside that produces events: an HTTP endpoint, a folder, a broker."""

    name: str
    # True for sources that lose nothing by pausing, such as a folder or a
    # polled database. The hub pauses them while the backlog is too long.
    can_wait: bool = False
    # With several worker processes on one hub file, an exclusive source runs
    # in one of them at a time: a broker session, a folder or a polled ERP
    # read by several workers at once would compete or read twice. False for
    # sources that every worker can run, such as the HTTP endpoint.
    exclusive: bool = True

    @abstractmethod
    async def run(self, ingest: Ingest, reject: Reject, stop: asyncio.Event) -> None:
        """Produce events until `stop` is set, then return."""


class Sink(ABC):
    """A target system that receives events."""

    name: str

    async def start(self) -> None:
        """Open connections; called once before the first delivery."""

    async def close(self) -> None:
        """Release connections."""

    @abstractmethod
    async def deliver(self, event: Event) -> str | None:
        """Deliver one event and return the target's reference for it, if any.

        Delivery must be idempotent: delivering an event that the target already
        has returns the existing reference and changes nothing. Raise
        RetryableDeliveryError for failures that may pass and
        PermanentDeliveryError for the rest.
        """

    def describe(self) -> dict[str, Any]:
        """Return what the dashboard and the report show about this sink."""
        return {"name": self.name, "kind": type(self).__name__}
