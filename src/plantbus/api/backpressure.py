"""Back-pressure for HTTP ingest: respond 503 while the pipelines are far behind.

Sources that can wait should wait when the sinks cannot keep up, so that the
backlog stays bounded. An HTTP client can wait: when the slowest pipeline has
more than a configured number of events left to deliver, `POST /v1/events`
responds `503` with `Retry-After` and appends nothing.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from plantbus.api.problems import BACKLOG_FULL, HttpProblem


class BacklogGuard:
    """Reject new events while the backlog of the slowest pipeline is over a limit."""

    def __init__(
        self,
        measure: Callable[[], Awaitable[int]],
        limit: int,
        *,
        retry_after_seconds: int = 5,
        cache_seconds: float = 0.5,
    ) -> None:
        self.measure = measure
        self.limit = limit
        self.retry_after_seconds = retry_after_seconds
        # Measuring costs a query per pipeline, so one result serves many requests.
        self.cache_seconds = cache_seconds
        self._backlog = 0
        self._measured_at = -float("inf")

    async def check(self) -> None:
        """Raise a 503 problem when the backlog is over the limit."""
        now = time.monotonic()
        if now - self._measured_at >= self.cache_seconds:
            self._backlog = await self.measure()
            self._measured_at = now
        if self._backlog <= self.limit:
            return
        raise HttpProblem(
            503,
            BACKLOG_FULL,
            "Backlog Full",
            f"The hub has {self._backlog} events that its pipelines have not "
            f"delivered yet, more than the limit of {self.limit}, so nothing was "
            f"appended. Send the request again after {self.retry_after_seconds} "
            f"seconds.",
            headers={"Retry-After": str(self.retry_after_seconds)},
        )
