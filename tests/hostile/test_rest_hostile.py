"""Hostile REST targets: redirects, huge or non-JSON bodies, 401 forever, slow headers.

A small aiohttp server on a free loopback port plays the target, so each
test can count the requests and connections that the sink makes.
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from plantbus.backbone.log import Record
from plantbus.config.model import RetryConfig
from plantbus.connectors.rest.auth import Bearer, OAuth2ClientCredentials
from plantbus.connectors.rest.sink import RestSink
from plantbus.errors import PermanentDeliveryError, RetryableDeliveryError
from plantbus.events.envelope import Event
from plantbus.pipeline.delivery import Deliverer
from plantbus.pipeline.steps import WorkItem
from plantbus.state.sqlite import SqliteStateStore
from plantbus.state.store import DeadLetterFilter

# Bytes of the huge response bodies, more than a sink should hold in memory.
HUGE = 64 * 1024 * 1024


@dataclass
class Target:
    """A loopback HTTP server that records what the sink sent."""

    url: str = ""
    requests: list[tuple[str, str]] = field(default_factory=list)
    token_requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    peers: set[int] = field(default_factory=set)


TARGET = web.AppKey("target", Target)


async def _handle(request: web.Request) -> web.StreamResponse:
    target = request.app[TARGET]
    target.requests.append((request.method, request.path))
    transport = request.transport
    if transport is not None:
        target.peers.add(transport.get_extra_info("peername")[1])
    name = request.match_info["name"]

    if name == "moved":
        raise web.HTTPMovedPermanently("/landing")
    if name == "temporary":
        raise web.HTTPTemporaryRedirect("/landing")
    if name == "landing":
        return web.json_response({"id": "not-the-record"}, status=200)
    if name == "html":
        return web.Response(status=502, text="<html>" + "x" * 100_000 + "</html>")
    if name == "created-text":
        return web.Response(
            status=201, text="created", headers={"Location": "/orders/7"}
        )
    if name in ("huge-ok", "huge-error"):
        response = web.StreamResponse(
            status=200 if name == "huge-ok" else 500,
            headers={"Content-Type": "application/json", "Location": "/orders/8"},
        )
        await response.prepare(request)
        chunk = b" " * 1024 * 1024
        for _ in range(HUGE // len(chunk)):
            await response.write(chunk)
        await response.write_eof()
        return response
    if name == "slow":
        await asyncio.sleep(5)
        return web.json_response({"id": "late"})
    if name == "unavailable":
        return web.json_response(
            {"title": "Down for maintenance"},
            status=503,
            headers={"Retry-After": "1000000000"},
        )
    if name == "unauthorized":
        return web.json_response({"title": "Unauthorized"}, status=401)
    if name == "busy":
        target.in_flight += 1
        target.max_in_flight = max(target.max_in_flight, target.in_flight)
        try:
            await asyncio.sleep(0.05)
        finally:
            target.in_flight -= 1
        return web.json_response({"id": "ok"}, status=201)
    return web.json_response({"title": "Not Found"}, status=404)


async def _token(request: web.Request) -> web.Response:
    request.app[TARGET].token_requests += 1
    return web.json_response(
        {"access_token": "t", "token_type": "Bearer", "expires_in": 3600}
    )


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    app = web.Application()
    app[TARGET] = recorded = Target()
    app.router.add_post("/token", _token)
    app.router.add_route("*", "/{name}", _handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    recorded.url = f"http://127.0.0.1:{port}"
    try:
        yield recorded
    finally:
        await runner.cleanup()


@pytest.fixture
async def sinks() -> AsyncIterator[list[RestSink]]:
    opened: list[RestSink] = []
    yield opened
    for sink in opened:
        await sink.close()


def event() -> Event:
    return Event.create(
        "maintenance.machine.down.v1",
        "urn:hostile",
        {"machine_id": "M-1", "since": "2026-03-02T06:00:00Z"},
    )


def sink_for(sinks: list[RestSink], url: str, **options: Any) -> RestSink:
    sink = RestSink("target", url, **options)
    sinks.append(sink)
    return sink


@pytest.mark.parametrize("path", ["moved", "temporary"])
async def test_rest_sink_does_not_follow_redirect(
    target: Target, sinks: list[RestSink], path: str
) -> None:
    """A followed redirect turns POST into GET, whose 200 would fake a delivery."""
    sink = sink_for(sinks, f"{target.url}/{path}")

    with pytest.raises(PermanentDeliveryError) as caught:
        await sink.deliver(event())

    assert target.requests == [("POST", f"/{path}")]
    assert "/landing" in str(caught.value)
    assert "redirect" in str(caught.value)


async def test_rest_sink_quotes_part_of_html_error(
    target: Target, sinks: list[RestSink]
) -> None:
    sink = sink_for(sinks, f"{target.url}/html")

    with pytest.raises(RetryableDeliveryError) as caught:
        await sink.deliver(event())

    assert "HTTP 502" in str(caught.value)
    assert "<html>xxx" in str(caught.value)
    assert len(str(caught.value)) < 1000


async def test_rest_sink_takes_location_of_non_json_body(
    target: Target, sinks: list[RestSink]
) -> None:
    sink = sink_for(sinks, f"{target.url}/created-text")

    reference = await sink.deliver(event())

    assert reference == "/orders/7"


@pytest.mark.parametrize(
    ("path", "failure"),
    [("huge-ok", None), ("huge-error", RetryableDeliveryError)],
)
async def test_rest_sink_reads_bounded_part_of_huge_body(
    target: Target, sinks: list[RestSink], path: str, failure: type[Exception] | None
) -> None:
    sink = sink_for(sinks, f"{target.url}/{path}", timeout_seconds=60)
    await sink.start()

    tracemalloc.start()
    try:
        if failure is None:
            reference = await sink.deliver(event())
        else:
            with pytest.raises(failure):
                await sink.deliver(event())
            reference = None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert peak < HUGE // 4
    if failure is None:
        assert reference == "/orders/8"


async def test_rest_sink_times_out_on_slow_headers(
    target: Target, sinks: list[RestSink]
) -> None:
    sink = sink_for(sinks, f"{target.url}/slow", timeout_seconds=0.3)

    with pytest.raises(RetryableDeliveryError) as caught:
        await sink.deliver(event())

    assert "timed out after 0.3 s" in str(caught.value)


async def test_rest_sink_gives_up_on_401_forever(
    target: Target, sinks: list[RestSink]
) -> None:
    bearer = sink_for(sinks, f"{target.url}/unauthorized", credentials=Bearer("x"))
    oauth = sink_for(
        sinks,
        f"{target.url}/unauthorized",
        credentials=OAuth2ClientCredentials(f"{target.url}/token", "id", "secret"),
    )

    for sink in (bearer, oauth):
        with pytest.raises(PermanentDeliveryError) as caught:
            await sink.deliver(event())
        assert "HTTP 401" in str(caught.value)
        assert "credentials" in str(caught.value)

    # Bearer: one request. OAuth2: one request, a new token, one more request.
    assert len(target.requests) == 3
    assert target.token_requests == 2


async def test_rest_sink_keeps_to_its_connection_limit(
    target: Target, sinks: list[RestSink]
) -> None:
    sink = sink_for(sinks, f"{target.url}/busy", max_connections=3)

    references = await asyncio.gather(*(sink.deliver(event()) for _ in range(40)))

    assert references == ["ok"] * 40
    assert target.max_in_flight <= 3
    assert len(target.peers) <= 3


async def deliver_with_policy(
    sink: RestSink, policy: RetryConfig, tmp_path: Path
) -> list[str]:
    """Deliver one event through a Deliverer; return the dead letters' errors."""
    state = SqliteStateStore(tmp_path / "state.sqlite")
    await state.start()
    try:
        deliverer = Deliverer(
            "hostile", {sink.name: sink}, [sink.name], state, policy, asyncio.Event()
        )
        sent = event()
        record = Record(0, 0, sent.to_json(), time.time())
        await asyncio.wait_for(deliverer.deliver(WorkItem(sent), record, set()), 30)
        letters = await state.dead_letters(DeadLetterFilter())
    finally:
        await state.close()
    return [letter.error for letter in letters]


async def test_rest_sink_retries_bad_gateway_within_policy(
    target: Target, sinks: list[RestSink], tmp_path: Path
) -> None:
    sink = sink_for(sinks, f"{target.url}/html")
    policy = RetryConfig(max_attempts=3, initial_seconds=0.01, jitter=0)

    errors = await deliver_with_policy(sink, policy, tmp_path)

    assert len(target.requests) == 3
    assert len(errors) == 1
    assert "gave up after 3 attempts" in errors[0]


async def test_rest_sink_huge_retry_after_gives_up(
    target: Target, sinks: list[RestSink], tmp_path: Path
) -> None:
    """A Retry-After of 31 years must not hold the event until the age limit."""
    sink = sink_for(sinks, f"{target.url}/unavailable")
    policy = RetryConfig(max_attempts=50, max_age_seconds=60, initial_seconds=0.01)

    errors = await deliver_with_policy(sink, policy, tmp_path)

    assert len(target.requests) == 1
    assert len(errors) == 1
    assert "asks to wait 1000000000 s" in errors[0]


async def test_rest_sink_rejects_line_break_in_header_value(
    target: Target, sinks: list[RestSink]
) -> None:
    sink = sink_for(sinks, f"{target.url}/busy", headers={"X-Machine": "{subject}"})
    hostile = event()
    hostile.subject = "M-1\r\nX-Injected: 1"

    with pytest.raises(PermanentDeliveryError) as caught:
        await sink.deliver(hostile)

    assert "line break" in str(caught.value)
    assert target.requests == []
