"""A circuit breaker per sink: stop calling a failing target, then probe it.

After `failure_threshold` retryable failures in a row the circuit opens, and
deliveries to that sink wait instead of adding load to a target that is down.
After `reset_seconds` one delivery goes through as a probe (half-open): if it
succeeds the circuit closes, and if it fails the circuit opens again. Waiting
at an open circuit does not count as a delivery attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from plantbus.observability.metrics import CIRCUIT_STATE

logger = logging.getLogger("plantbus.pipeline")

CLOSED, HALF_OPEN, OPEN = "closed", "half-open", "open"
_GAUGE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


class CircuitOpen(Exception):
    """The hub is stopping while a delivery waits at an open circuit."""


class CircuitBreaker:
    """Track consecutive failures of one sink and hold deliveries while it is down."""

    def __init__(
        self,
        sink: str,
        *,
        failure_threshold: int = 5,
        reset_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self.clock = clock
        self.state = CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self._probing = False
        self._changed = asyncio.Event()
        CIRCUIT_STATE.labels(sink).set(0)

    async def acquire(self, stopping: asyncio.Event) -> None:
        """Wait until a delivery may go to the sink; raise CircuitOpen on stop."""
        while True:
            if self.state == CLOSED:
                return
            if (
                self.state == OPEN
                and self.clock() - self.opened_at >= self.reset_seconds
            ):
                self._set(HALF_OPEN)
            if self.state == HALF_OPEN and not self._probing:
                self._probing = True
                return
            if stopping.is_set():
                raise CircuitOpen()

            # Wake up when the state changes, when the probe is due, or at
            # least every second to notice a stop.
            remaining = self.reset_seconds - (self.clock() - self.opened_at)
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait(), timeout=min(max(remaining, 0.01), 1.0)
                )

    def succeeded(self) -> None:
        """Record that the sink responded; a permanent rejection is a response too."""
        self.failures = 0
        self._probing = False
        if self.state != CLOSED:
            logger.info("circuit of sink %s closed", self.sink)
            self._set(CLOSED)

    def failed(self) -> None:
        """Record a retryable failure; open the circuit at the threshold."""
        self.failures += 1
        self._probing = False
        if self.state == HALF_OPEN or self.failures >= self.failure_threshold:
            if self.state != OPEN:
                logger.warning(
                    "circuit of sink %s opened after %d failures in a row; the "
                    "next probe is in %.0f s",
                    self.sink,
                    self.failures,
                    self.reset_seconds,
                )
            self.opened_at = self.clock()
            self._set(OPEN)

    def _set(self, state: str) -> None:
        self.state = state
        CIRCUIT_STATE.labels(self.sink).set(_GAUGE[state])
        self._changed.set()
