"""The deliver step: idempotency ledger, retries with backoff, dead letters."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from plantbus.backbone.log import Record
from plantbus.config.model import RetryConfig
from plantbus.connectors.base import Sink
from plantbus.errors import PermanentDeliveryError, RetryableDeliveryError
from plantbus.events.envelope import Event
from plantbus.observability.metrics import DEAD_LETTERS, DELIVERIES, DELIVERY_LATENCY
from plantbus.pipeline.circuit import CircuitBreaker, CircuitOpen
from plantbus.pipeline.steps import WorkItem
from plantbus.state.dead_letters import Attempt, DeadLetter
from plantbus.state.store import Delivery, StateStore

logger = logging.getLogger("plantbus.pipeline")


def event_dead_letter(
    record: Record,
    event: Event,
    pipeline: str,
    stage: str,
    error: str,
    *,
    sink: str | None = None,
    attempts: list[Attempt] | None = None,
    details: dict[str, Any] | None = None,
) -> DeadLetter:
    """Build the dead letter of a log record that a pipeline gave up on.

    The payload is the record as it is in the log, so a redrive runs the
    pipeline's steps again. `event` is the event as the failing step or sink
    received it, whose id and type the dead letter lists.
    """
    return DeadLetter(
        stage=stage,
        error=error,
        payload=record.body,
        source=event.source,
        content_type="application/cloudevents+json",
        event_id=event.id,
        event_type=event.type,
        pipeline=pipeline,
        sink=sink,
        offset=record.offset,
        attempts=attempts or [],
        details=details or {},
    )


class Abandoned(Exception):
    """The hub is stopping while a delivery waits to be retried."""


def backoff_seconds(
    policy: RetryConfig, attempt: int, retry_after: float | None
) -> float:
    """Return the wait before the next attempt; `attempt` counts from 1."""
    wait = min(
        policy.max_seconds, policy.initial_seconds * policy.multiplier ** (attempt - 1)
    )
    wait *= 1 - policy.jitter * random.random()
    if retry_after is not None:
        # A target that names its own wait gets at least that long.
        wait = max(wait, retry_after)
    return wait


def _is_permanent(exc: Exception, message: str, policy: RetryConfig) -> bool:
    """Decide whether a failure is final: the policy's patterns, else the sink's class.

    Anything the sink did not mark permanent may pass: a timeout, a 5xx, a
    dropped connection, or an error the sink did not classify.
    """
    if any(re.search(pattern, message) for pattern in policy.permanent_errors):
        return True
    if any(re.search(pattern, message) for pattern in policy.retryable_errors):
        return False
    return isinstance(exc, PermanentDeliveryError)


class Deliverer:
    """Deliver work items to their sinks, skipping deliveries the ledger records."""

    def __init__(
        self,
        pipeline: str,
        sinks: dict[str, Sink],
        default_targets: list[str],
        state: StateStore,
        policy: RetryConfig,
        stopping: asyncio.Event,
        *,
        sink_policies: dict[str, RetryConfig] | None = None,
        breakers: dict[str, CircuitBreaker] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.sinks = sinks
        self.default_targets = default_targets
        self.state = state
        self.policy = policy
        self.stopping = stopping
        # A sink's own policy wins over the pipeline's; breakers are per sink
        # and shared by every pipeline that delivers to it.
        self.sink_policies = sink_policies or {}
        self.breakers = breakers or {}
        # Deliveries not yet in the ledger. The runtime writes them in one
        # transaction before it commits offsets: a crash in between redelivers
        # those events, and the sinks' own idempotency absorbs the repeat.
        self.unrecorded: list[Delivery] = []
        # Set by the runtime: waits before a retry by handing the record back
        # to the log with a delay. Without it a retry waits here.
        self.hold: Callable[[Record, float], Awaitable[None]] | None = None
        # Labelled metric children, looked up once per sink instead of per event.
        self._delivered = {
            name: DELIVERIES.labels(pipeline, name, "delivered") for name in sinks
        }
        self._skipped = {
            name: DELIVERIES.labels(pipeline, name, "skipped") for name in sinks
        }
        self._latency = {
            name: DELIVERY_LATENCY.labels(pipeline, name) for name in sinks
        }

    def targets(self, item: WorkItem) -> list[str]:
        """Return the sinks that an item goes to."""
        return self.default_targets or item.sinks or []

    async def deliver(
        self, item: WorkItem, record: Record, already: set[tuple[str, str]]
    ) -> int | None:
        """Deliver to every target that the ledger does not list yet.

        Return the id of the first dead letter that a failed delivery left,
        or None when every target has the event. Raises Abandoned when the hub
        stops during a retry wait, so that the record's offset is not
        committed and a restart delivers it again.
        """
        event = item.event
        first_letter = None
        for sink_name in self.targets(item):
            if (sink_name, event.id) in already:
                self._skipped[sink_name].inc()
                continue
            letter = await self._deliver_one(sink_name, item, record)
            if first_letter is None:
                first_letter = letter
        return first_letter

    async def _deliver_one(
        self, sink_name: str, item: WorkItem, record: Record
    ) -> int | None:
        sink = self.sinks[sink_name]
        policy = self.sink_policies.get(sink_name, self.policy)
        breaker = self.breakers.get(sink_name)
        event = item.event
        attempts: list[Attempt] = []
        while True:
            if breaker is not None:
                try:
                    await breaker.acquire(self.stopping)
                except CircuitOpen:
                    raise Abandoned() from None
            try:
                reference = await sink.deliver(event)
            except Exception as exc:
                message = str(exc) or type(exc).__name__
                attempts.append(Attempt(time.time(), message))
                permanent = _is_permanent(exc, message, policy)
                if breaker is not None:
                    # A permanent rejection is a response, so the target is up.
                    if permanent:
                        breaker.succeeded()
                    else:
                        breaker.failed()
                if permanent:
                    return await self._dead_letter(
                        sink_name, item, record, attempts, message
                    )
                too_old = policy.max_age_seconds is not None and (
                    attempts[-1].at - attempts[0].at >= policy.max_age_seconds
                )
                if len(attempts) >= policy.max_attempts or too_old:
                    limit = (
                        f"{len(attempts)} attempts"
                        if not too_old
                        else f"{attempts[-1].at - attempts[0].at:.0f} s of retries"
                    )
                    return await self._dead_letter(
                        sink_name,
                        item,
                        record,
                        attempts,
                        f"gave up after {limit}: {message}",
                    )
                retry_after = (
                    exc.retry_after if isinstance(exc, RetryableDeliveryError) else None
                )
                wait = backoff_seconds(policy, len(attempts), retry_after)
                age = attempts[-1].at - attempts[0].at
                if (
                    policy.max_age_seconds is not None
                    and age + wait >= policy.max_age_seconds
                    and retry_after is not None
                ):
                    # A target may ask for any wait in Retry-After; one that
                    # ends past the age limit would only hold the key back.
                    return await self._dead_letter(
                        sink_name,
                        item,
                        record,
                        attempts,
                        f"gave up: the target asks to wait {retry_after:.0f} s, "
                        f"past `max_age_seconds` {policy.max_age_seconds:g}: "
                        f"{message}",
                    )
                DELIVERIES.labels(self.pipeline, sink_name, "retried").inc()
                logger.warning(
                    "delivery failed, retrying in %.2fs (attempt %d of %d): %s",
                    wait,
                    len(attempts),
                    policy.max_attempts,
                    message,
                    extra={
                        "event_id": event.id,
                        "sink": sink_name,
                        "correlation_id": event.correlationid,
                    },
                )
                await self.wait(wait, record)
                continue

            if breaker is not None:
                breaker.succeeded()
            latency = max(0.0, time.time() - record.appended_at)
            self.unrecorded.append(
                Delivery(
                    sink=sink_name,
                    event_id=event.id,
                    target_ref=reference,
                    delivered_at=time.time(),
                    latency=latency,
                    event_type=event.type,
                    pipeline=self.pipeline,
                )
            )
            self._delivered[sink_name].inc()
            self._latency[sink_name].observe(latency)
            return None

    async def wait(self, seconds: float, record: Record | None = None) -> None:
        """Wait before a retry of `record`; raise Abandoned when the hub stops."""
        if self.hold is not None and record is not None:
            await self.hold(record, seconds)
        else:
            await self.sleep(seconds)

    async def sleep(self, seconds: float) -> None:
        """Sleep for `seconds`; raise Abandoned when the hub stops meanwhile."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except TimeoutError:
            return
        raise Abandoned()

    async def _dead_letter(
        self,
        sink_name: str,
        item: WorkItem,
        record: Record,
        attempts: list[Attempt],
        error: str,
    ) -> int:
        letter_id = await self.state.add_dead_letter(
            event_dead_letter(
                record,
                item.event,
                self.pipeline,
                f"deliver:{sink_name}",
                error,
                sink=sink_name,
                attempts=attempts,
            )
        )
        DELIVERIES.labels(self.pipeline, sink_name, "dead").inc()
        DEAD_LETTERS.labels(f"deliver:{sink_name}").inc()
        return letter_id
