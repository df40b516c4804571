"""Fault modes and the rate limiter of the reference servers."""

from __future__ import annotations

import asyncio
import math
import random
import time

from pydantic import BaseModel, ConfigDict, Field


class FaultSettings(BaseModel):
    """Faults that a test switches on at run time, all off by default.

    A share is the probability, from 0 to 1, that one API request gets the
    fault. Each request draws once and gets at most one of the faults in the
    order hang, 500, 503, 429.
    """

    model_config = ConfigDict(extra="forbid")

    # Extra delay before every API request is handled, in seconds.
    latency_seconds: float = Field(default=0.0, ge=0)
    # Share of requests that hang until the faults change or the server stops.
    hang_share: float = Field(default=0.0, ge=0, le=1)
    # Maximum hang, in seconds, after which the request fails with 504.
    hang_seconds: float = Field(default=600.0, gt=0)
    # Share of requests that fail with 500 Internal Server Error.
    error_share: float = Field(default=0.0, ge=0, le=1)
    # Share of requests that fail with 503 Service Unavailable and Retry-After.
    unavailable_share: float = Field(default=0.0, ge=0, le=1)
    # Share of requests that fail with 429 Too Many Requests and Retry-After,
    # even when the rate limiter has tokens left.
    throttle_share: float = Field(default=0.0, ge=0, le=1)
    # Retry-After of the 503 and 429 faults, in whole seconds.
    retry_after_seconds: int = Field(default=1, ge=0)


class Faults:
    """The current fault settings and the event that releases hanging requests."""

    def __init__(self, seed: int | None = None) -> None:
        self.settings = FaultSettings()
        self._random = random.Random(seed)
        self._release = asyncio.Event()

    def update(self, settings: FaultSettings) -> None:
        """Switch to new settings and release every request that hangs."""
        self.settings = settings
        self.release()

    def release(self) -> None:
        """Let every hanging request finish now."""
        self._release.set()
        self._release = asyncio.Event()

    def draw(self) -> str | None:
        """Pick the fault of one request: hang, error, unavailable, throttle or None."""
        settings = self.settings
        roll = self._random.random()
        for name, share in (
            ("hang", settings.hang_share),
            ("error", settings.error_share),
            ("unavailable", settings.unavailable_share),
            ("throttle", settings.throttle_share),
        ):
            if roll < share:
                return name
            roll -= share
        return None

    async def hang(self) -> None:
        """Wait until released or until `hang_seconds` pass."""
        released = self._release
        try:
            await asyncio.wait_for(released.wait(), self.settings.hang_seconds)
        except TimeoutError:
            return


class RateLimit(BaseModel):
    """Token bucket settings: a steady rate and a burst capacity."""

    model_config = ConfigDict(extra="forbid")

    # Requests per second, or None to switch the limit off.
    rate_per_second: float | None = Field(default=None, gt=0)
    # Requests that may arrive at once after a quiet spell.
    burst: int = Field(default=10, ge=1)


class TokenBucket:
    """A token bucket: each request takes a token, tokens refill at a steady rate."""

    def __init__(self, limit: RateLimit | None = None) -> None:
        self.configure(limit or RateLimit())

    def configure(self, limit: RateLimit) -> None:
        """Apply new settings and refill the bucket."""
        self.limit = limit
        self._tokens = float(limit.burst)
        self._updated = time.monotonic()

    def take(self) -> int | None:
        """Take one token and return None, or return whole seconds until one refills."""
        rate = self.limit.rate_per_second
        if rate is None:
            return None
        now = time.monotonic()
        self._tokens = min(
            float(self.limit.burst), self._tokens + (now - self._updated) * rate
        )
        self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            return None
        return max(1, math.ceil((1 - self._tokens) / rate))
