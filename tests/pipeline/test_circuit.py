"""Circuit breakers and per-sink retry policies in the deliver step."""

from __future__ import annotations

import asyncio

import pytest

from plantbus.config.model import RetryConfig
from plantbus.connectors.base import Sink
from plantbus.errors import PermanentDeliveryError, RetryableDeliveryError
from plantbus.events.envelope import Event
from plantbus.pipeline.circuit import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from plantbus.pipeline.delivery import Deliverer
from plantbus.pipeline.runtime import PipelineRuntime
from plantbus.state.store import DeadLetterFilter

from .test_runtime import make_runtime, progressed, run_until, stores  # noqa: F401

pytestmark = pytest.mark.asyncio


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class DownSink(Sink):
    """Fail with a retryable error until `up` is set, then accept."""

    name = "down"

    def __init__(self, error: Exception | None = None) -> None:
        self.calls = 0
        self.up = False
        self.error = error or RetryableDeliveryError("503 Service Unavailable")
        self.delivered: list[str] = []

    async def deliver(self, event: Event) -> str | None:
        self.calls += 1
        if not self.up:
            raise self.error
        self.delivered.append(event.id)
        return None


async def test_circuit_opens_at_threshold_and_probes_after_reset() -> None:
    clock = Clock()
    breaker = CircuitBreaker("erp", failure_threshold=3, reset_seconds=10, clock=clock)
    stopping = asyncio.Event()

    for _ in range(3):
        await breaker.acquire(stopping)
        breaker.failed()
    assert breaker.state == OPEN

    waiter = asyncio.create_task(breaker.acquire(stopping))
    await asyncio.sleep(0.05)
    assert not waiter.done()

    clock.now = 10.0
    await asyncio.wait_for(waiter, timeout=2)
    assert breaker.state == HALF_OPEN

    second = asyncio.create_task(breaker.acquire(stopping))
    await asyncio.sleep(0.05)
    assert not second.done()

    breaker.succeeded()
    await asyncio.wait_for(second, timeout=2)
    assert breaker.state == CLOSED


async def test_circuit_failed_probe_opens_again() -> None:
    clock = Clock()
    breaker = CircuitBreaker("erp", failure_threshold=1, reset_seconds=5, clock=clock)
    stopping = asyncio.Event()
    breaker.failed()
    clock.now = 5.0

    await breaker.acquire(stopping)
    breaker.failed()

    assert breaker.state == OPEN
    assert breaker.opened_at == 5.0


async def test_deliverer_holds_calls_while_circuit_open(stores) -> None:  # noqa: F811
    log, state = stores
    await log.append([progressed(f"WO{n}", n) for n in range(20)])
    sink = DownSink()
    breaker = CircuitBreaker("down", failure_threshold=2, reset_seconds=0.3)
    runtime = make_runtime(log, state, sink, concurrency=4)
    runtime.deliverer.breakers = {"down": breaker}
    runtime.deliverer.policy = RetryConfig(
        max_attempts=100, initial_seconds=0.01, max_seconds=0.02
    )

    task = asyncio.create_task(runtime.run())
    await asyncio.sleep(1.0)
    calls_while_down = sink.calls
    sink.up = True
    async with asyncio.timeout(10):
        while len(sink.delivered) < 20:
            await asyncio.sleep(0.02)
    runtime.stopping.set()
    await task

    # Without the breaker, 4 workers retrying every 10-20 ms make about 200
    # calls in a second; with it, about one probe per reset period gets through.
    assert calls_while_down < 20
    assert breaker.state == CLOSED
    assert sorted(sink.delivered) == sorted(set(sink.delivered))


async def test_deliverer_gives_up_at_max_age(stores) -> None:  # noqa: F811
    log, state = stores
    await log.append([progressed("WO1", 1)])
    sink = DownSink()
    stopping = asyncio.Event()
    policy = RetryConfig(
        max_attempts=1000, max_age_seconds=0.3, initial_seconds=0.05, max_seconds=0.05
    )
    deliverer = Deliverer("test", {"down": sink}, ["down"], state, policy, stopping)
    runtime = PipelineRuntime(
        "test", log, state, ["production.*"], [], deliverer, commit_interval=0.01
    )

    await run_until(runtime, lambda: runtime.processed == 1)

    letters = await state.dead_letters(DeadLetterFilter())
    assert len(letters) == 1
    assert "s of retries" in letters[0].error
    assert len(letters[0].attempts) < 20


async def test_policy_patterns_override_sink_classification(stores) -> None:  # noqa: F811
    log, state = stores
    await log.append([progressed("WO1", 1), progressed("WO2", 2)])
    stopping = asyncio.Event()
    validation = DownSink(RetryableDeliveryError("HTTP 422: quantity too large"))
    policy = RetryConfig(
        max_attempts=50,
        initial_seconds=0.01,
        max_seconds=0.01,
        permanent_errors=[r"HTTP 422"],
    )
    deliverer = Deliverer(
        "test", {"down": validation}, ["down"], state, policy, stopping
    )
    runtime = PipelineRuntime(
        "test", log, state, ["production.*"], [], deliverer, commit_interval=0.01
    )

    await run_until(runtime, lambda: runtime.processed == 2)

    assert validation.calls == 2
    letters = await state.dead_letters(DeadLetterFilter())
    assert len(letters) == 2


async def test_retryable_pattern_retries_permanent_error(stores) -> None:  # noqa: F811
    log, state = stores
    await log.append([progressed("WO1", 1)])
    stopping = asyncio.Event()
    locked = DownSink(PermanentDeliveryError("database is locked"))
    policy = RetryConfig(
        max_attempts=3,
        initial_seconds=0.01,
        max_seconds=0.01,
        retryable_errors=["is locked"],
    )
    deliverer = Deliverer("test", {"down": locked}, ["down"], state, policy, stopping)
    runtime = PipelineRuntime(
        "test", log, state, ["production.*"], [], deliverer, commit_interval=0.01
    )

    await run_until(runtime, lambda: runtime.processed == 1)

    assert locked.calls == 3
