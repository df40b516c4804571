"""The REST sink against the reference servers, started on loopback ports."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from plantbus.backbone.log import Record
from plantbus.config.model import RetryConfig
from plantbus.connectors.rest.auth import ApiKey, OAuth2ClientCredentials
from plantbus.connectors.rest.sink import RestSink
from plantbus.errors import PermanentDeliveryError, RetryableDeliveryError
from plantbus.events.envelope import Event
from plantbus.pipeline.delivery import Deliverer
from plantbus.pipeline.steps import WorkItem
from plantbus.sim.refservers import build
from plantbus.sim.refservers.base import RefServer
from plantbus.sim.refservers.faults import FaultSettings, RateLimit
from plantbus.state.sqlite import SqliteStateStore

# Maps a quality inspection failure onto a QMS nonconformance.
NONCONFORMANCE = {
    "item": "data.item",
    "lot": "data.lot",
    "quantity": {"value": "data.quantity.value", "unit": "data.quantity.unit"},
    "defect_code": "data.defect_code",
    "severity": "data.severity",
    "detected_at": "time",
    "plant": "plant",
    "description": "'Inspection ' & data.inspection_id & ' failed'",
    "source_event_id": "id",
}

StartServer = Callable[..., Awaitable[RefServer]]


@pytest.fixture
async def serve() -> AsyncIterator[StartServer]:
    """Start reference servers on free loopback ports and stop them afterwards."""
    started: list[RefServer] = []

    async def start(system: str, **options: Any) -> RefServer:
        server = build(system, **options)
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


@pytest.fixture
async def sinks() -> AsyncIterator[list[RestSink]]:
    """Collect sinks that a test opens and close them afterwards."""
    opened: list[RestSink] = []
    yield opened
    for sink in opened:
        await sink.close()


def inspection_failed(number: int = 1, quantity: str = "4") -> Event:
    return Event.create(
        "quality.inspection.failed.v1",
        "urn:plantbus:plant:p1:qc",
        {
            "inspection_id": f"INSP-{number}",
            "item": "BRK-001",
            "lot": f"LOT-{number:04d}",
            "quantity": {"value": quantity, "unit": "pcs"},
            "defect_code": "DIM-12",
            "severity": "major",
        },
        plant="P1",
    )


def oauth(server: RefServer, **options: Any) -> OAuth2ClientCredentials:
    return OAuth2ClientCredentials(
        f"{server.url}/oauth/token", "plantbus", "plantbus-secret", **options
    )


def qms_sink(server: RefServer, sinks: list[RestSink], **options: Any) -> RestSink:
    options.setdefault("credentials", oauth(server))
    sink = RestSink(
        "qms", f"{server.url}/api/v2/nonconformances", body=NONCONFORMANCE, **options
    )
    sinks.append(sink)
    return sink


async def test_rest_sink_maps_body_with_jsonata(serve: StartServer, sinks) -> None:
    server = await serve("qms")
    sink = qms_sink(server, sinks)
    event = inspection_failed(7)

    reference = await sink.deliver(event)

    record = server.collections["nonconformance"].records[reference]
    assert record["lot"] == "LOT-0007"
    assert record["quantity"] == {"value": "4", "unit": "pcs"}
    assert record["description"] == "Inspection INSP-7 failed"
    assert record["source_event_id"] == event.id
    assert server.collections["nonconformance"].keys[event.id][1] == reference


async def test_rest_sink_url_template_fills_event_values(
    serve: StartServer, sinks
) -> None:
    server = await serve("supplier-portal", api_keys=("k",))
    sink = RestSink(
        "ack",
        server.url + "/api/acknowledgements/{data.ack_id}/pickup",
        credentials=ApiKey("X-API-Key", "k"),
    )
    sinks.append(sink)
    acks = server.collections["acknowledgement"]
    created, _ = acks.create(
        {
            "asn_number": "A1",
            "supplier_id": "S1",
            "decision": "accepted",
            "reason": None,
            "acknowledged_at": "2026-03-01T06:00:00Z",
        },
        None,
    )
    event = Event.create("supply.ack.picked.v1", "urn:x", {"ack_id": created["id"]})

    reference = await sink.deliver(event)

    assert reference == created["id"]
    assert acks.records[created["id"]]["status"] == "picked_up"


async def test_rest_sink_oauth_token_cached_until_expiry(
    serve: StartServer, sinks
) -> None:
    server = await serve("qms", token_lifetime_seconds=1.0)
    credentials = oauth(server, refresh_margin_seconds=0.0)
    sink = qms_sink(server, sinks, credentials=credentials)

    await asyncio.gather(*(sink.deliver(inspection_failed(n)) for n in range(20)))
    assert server.tokens_issued == 1

    await asyncio.sleep(1.1)
    await sink.deliver(inspection_failed(99))

    assert server.tokens_issued == 2
    assert credentials.tokens_fetched == 2
    assert len(server.collections["nonconformance"].records) == 21


async def test_rest_sink_oauth_refetches_token_once_on_401(
    serve: StartServer, sinks
) -> None:
    server = await serve("qms")
    credentials = oauth(server)
    sink = qms_sink(server, sinks, credentials=credentials)
    await sink.deliver(inspection_failed(0))

    # The server drops every token, as after a key rotation. The sink's
    # cached token is still within its lifetime.
    server.tokens.clear()
    await asyncio.gather(*(sink.deliver(inspection_failed(n)) for n in range(1, 21)))

    assert server.tokens_issued == 2
    assert credentials.tokens_fetched == 2
    assert len(server.collections["nonconformance"].records) == 21


async def test_rest_sink_oauth_wrong_secret_is_permanent(
    serve: StartServer, sinks
) -> None:
    server = await serve("qms")
    credentials = OAuth2ClientCredentials(
        f"{server.url}/oauth/token", "plantbus", "wrong"
    )
    sink = qms_sink(server, sinks, credentials=credentials)

    with pytest.raises(PermanentDeliveryError, match="invalid_client"):
        await sink.deliver(inspection_failed())


@pytest.mark.parametrize("location", ["header", "query"])
async def test_rest_sink_api_key_accepted(
    serve: StartServer, sinks, location: str
) -> None:
    server = await serve("qms", api_keys=("k-123",))
    name = "X-API-Key" if location == "header" else "api_key"
    sink = qms_sink(
        sinks=sinks, server=server, credentials=ApiKey(name, "k-123", location)
    )

    reference = await sink.deliver(inspection_failed())

    assert reference in server.collections["nonconformance"].records
    assert server.tokens_issued == 0


async def test_rest_sink_unknown_api_key_is_permanent(
    serve: StartServer, sinks
) -> None:
    server = await serve("qms", api_keys=("k-123",))
    sink = qms_sink(server, sinks, credentials=ApiKey("X-API-Key", "other"))

    with pytest.raises(PermanentDeliveryError, match="HTTP 401") as caught:
        await sink.deliver(inspection_failed())

    assert "auth" in str(caught.value)
    assert not server.collections["nonconformance"].records


async def test_rest_sink_no_credentials_is_permanent(serve: StartServer, sinks) -> None:
    server = await serve("qms")
    sink = RestSink("qms", f"{server.url}/api/v2/nonconformances", body=NONCONFORMANCE)
    sinks.append(sink)

    with pytest.raises(PermanentDeliveryError, match="Credentials missing"):
        await sink.deliver(inspection_failed())


async def test_rest_sink_422_is_permanent_with_detail(
    serve: StartServer, sinks
) -> None:
    server = await serve("qms")
    sink = qms_sink(server, sinks)

    with pytest.raises(PermanentDeliveryError) as caught:
        await sink.deliver(inspection_failed(quantity="-3"))

    message = str(caught.value)
    assert "HTTP 422" in message
    assert "quantity.value" in message
    assert "'-3'" in message
    assert "must be greater than 0" in message
    assert not server.collections["nonconformance"].records


async def test_rest_sink_429_raises_retryable_with_retry_after(
    serve: StartServer, sinks
) -> None:
    server = await serve("qms")
    sink = qms_sink(server, sinks)
    server.faults.update(FaultSettings(throttle_share=1.0, retry_after_seconds=2))

    with pytest.raises(RetryableDeliveryError) as caught:
        await sink.deliver(inspection_failed())

    assert caught.value.retry_after == 2.0
    assert "HTTP 429" in str(caught.value)


async def test_rest_sink_503_raises_retryable_with_retry_after(
    serve: StartServer, sinks
) -> None:
    server = await serve("qms")
    sink = qms_sink(server, sinks)
    server.faults.update(FaultSettings(unavailable_share=1.0, retry_after_seconds=3))

    with pytest.raises(RetryableDeliveryError) as caught:
        await sink.deliver(inspection_failed())

    assert caught.value.retry_after == 3.0


async def test_rest_sink_timeout_is_retryable(serve: StartServer, sinks) -> None:
    server = await serve("qms")
    sink = qms_sink(server, sinks, timeout_seconds=0.3)
    await sink.deliver(inspection_failed(0))
    server.faults.update(FaultSettings(hang_share=1.0))

    with pytest.raises(RetryableDeliveryError, match="timed out"):
        await sink.deliver(inspection_failed(1))

    server.faults.update(FaultSettings())
    # One CI run timed out here too, after 0.3 s with the fault off, so the
    # retry goes through a sink with the default timeout.
    patient = qms_sink(server, sinks)
    await patient.deliver(inspection_failed(1))
    assert len(server.collections["nonconformance"].records) == 2


async def test_rest_sink_connection_refused_is_retryable(sinks) -> None:
    sink = RestSink("gone", "http://127.0.0.1:9/api", credentials=None)
    sinks.append(sink)

    with pytest.raises(RetryableDeliveryError, match="failed"):
        await sink.deliver(inspection_failed())


async def test_rest_sink_redelivery_creates_one_record(
    serve: StartServer, sinks
) -> None:
    server = await serve("qms")
    sink = qms_sink(server, sinks)
    event = inspection_failed()

    references = [await sink.deliver(event) for _ in range(3)]
    references += await asyncio.gather(*(sink.deliver(event) for _ in range(5)))

    assert len(set(references)) == 1
    assert len(server.collections["nonconformance"].records) == 1


async def test_rest_sink_409_conflict_is_delivered(serve: StartServer, sinks) -> None:
    server = await serve("cmms")
    body = {
        "asset_id": "data.machine_id",
        "title": "'Machine down: ' & data.machine_id",
        "type": "'corrective'",
        "priority": "'high'",
        "reported_at": "time",
        "external_ref": "id",
    }
    url = f"{server.url}/api/work-orders"
    first = RestSink("cmms", url, body=body, credentials=oauth(server))
    # A second sink with other idempotency keys acts as another hub that
    # reports the same event, so the CMMS responds 409 for the business key.
    second = RestSink(
        "cmms2", url, body=body, credentials=oauth(server), idempotency_key="'b-' & id"
    )
    sinks.extend([first, second])
    event = Event.create(
        "maintenance.machine.down.v1",
        "urn:plantbus:plant:p1:scada",
        {"machine_id": "M7"},
    )

    created = await first.deliver(event)
    again = await second.deliver(event)

    assert created == "MWO-000001"
    assert again == "/api/work-orders/MWO-000001"
    assert len(server.collections["work-order"].records) == 1


async def test_rest_sink_placeholder_without_value_is_permanent(
    serve: StartServer, sinks
) -> None:
    server = await serve("qms")
    sink = RestSink(
        "qms",
        server.url + "/api/v2/nonconformances/{data.missing}",
        credentials=oauth(server),
    )
    sinks.append(sink)

    with pytest.raises(PermanentDeliveryError, match=r"data\.missing"):
        await sink.deliver(inspection_failed())


async def test_rest_sink_pool_bounded_during_burst(serve: StartServer, sinks) -> None:
    server = await serve("qms", api_keys=("k",))
    sink = qms_sink(
        server, sinks, credentials=ApiKey("X-API-Key", "k"), max_connections=4
    )

    references = await asyncio.gather(
        *(sink.deliver(inspection_failed(n)) for n in range(300))
    )

    assert len(set(references)) == 300
    assert len(server.collections["nonconformance"].records) == 300
    assert 1 <= len(server.peers) <= 4


# Through the deliver step: retries, waits and the final outcome.


async def deliver_through_pipeline(
    sink: RestSink, event: Event, tmp_path: Path, policy: RetryConfig
) -> tuple[Deliverer, SqliteStateStore]:
    state = SqliteStateStore(tmp_path / "state.sqlite")
    await state.start()
    deliverer = Deliverer(
        "test", {sink.name: sink}, [sink.name], state, policy, asyncio.Event()
    )
    record = Record(0, 0, event.to_json(), time.time())
    await deliverer.deliver(WorkItem(event), record, set())
    return deliverer, state


FAST = RetryConfig(max_attempts=50, initial_seconds=0.02, max_seconds=0.05, jitter=0)


async def test_rest_sink_retry_after_honoured_by_deliverer(
    serve: StartServer, sinks, tmp_path: Path
) -> None:
    server = await serve("qms", rate_limit=RateLimit(rate_per_second=1, burst=1))
    sink = qms_sink(server, sinks)
    await sink.deliver(inspection_failed(0))

    started = time.monotonic()
    deliverer, state = await deliver_through_pipeline(
        sink, inspection_failed(1), tmp_path, FAST
    )
    elapsed = time.monotonic() - started
    await state.close()

    # The backoff alone would wait 0.02 s, but the server requested 1 s.
    assert elapsed >= 0.9
    assert len(deliverer.unrecorded) == 1
    assert len(server.collections["nonconformance"].records) == 2


@pytest.mark.parametrize(
    "fault",
    [
        FaultSettings(error_share=1.0),
        FaultSettings(unavailable_share=1.0, retry_after_seconds=0),
        FaultSettings(throttle_share=1.0, retry_after_seconds=0),
        FaultSettings(hang_share=1.0),
    ],
    ids=["500", "503", "429", "hang"],
)
async def test_rest_sink_fault_retried_until_switched_off(
    serve: StartServer, sinks, tmp_path: Path, fault: FaultSettings
) -> None:
    server = await serve("qms")
    sink = qms_sink(server, sinks, timeout_seconds=0.2)
    server.faults.update(fault)
    event = inspection_failed()

    async def switch_off() -> None:
        while server.requests < 4:
            await asyncio.sleep(0.01)
        server.faults.update(FaultSettings())

    switcher = asyncio.create_task(switch_off())
    deliverer, state = await deliver_through_pipeline(sink, event, tmp_path, FAST)
    await switcher
    await state.close()

    records = server.collections["nonconformance"].records
    assert len(deliverer.unrecorded) == 1
    assert deliverer.unrecorded[0].target_ref in records
    assert len(records) == 1
    assert server.requests >= 4
