"""The reference servers: auth, validation, idempotency, rate limits and faults."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from plantbus.sim.refservers import SYSTEMS, build
from plantbus.sim.refservers.base import RefServer
from plantbus.sim.refservers.faults import RateLimit
from plantbus.sim.trytond_server import free_port

QUANTITY = {"value": "12.5", "unit": "kg"}
WHEN = "2026-03-01T06:00:00Z"

# One valid body per creatable collection, and a field to break in it.
SAMPLES: dict[str, tuple[str, dict[str, Any], str]] = {
    "wms": (
        "/api/v1/staging-tasks",
        {
            "work_order_id": "WO-1",
            "item": "BRK-001",
            "quantity": QUANTITY,
            "from_location": "WH-A",
            "to_location": "LINE-3",
            "due_at": WHEN,
        },
        "due_at",
    ),
    "cmms": (
        "/api/work-orders",
        {
            "asset_id": "M7",
            "title": "Spindle overheats",
            "type": "corrective",
            "priority": "high",
            "reported_at": WHEN,
        },
        "priority",
    ),
    "qms": (
        "/api/v2/nonconformances",
        {
            "item": "BRK-001",
            "quantity": QUANTITY,
            "defect_code": "DIM-12",
            "severity": "major",
            "detected_at": WHEN,
            "plant": "P1",
            "description": "Bore 0.2 mm too wide",
        },
        "defect_code",
    ),
    "procurement": (
        "/api/requisitions",
        {
            "requester": "planner-1",
            "item": "BRK-001",
            "quantity": QUANTITY,
            "need_by": "2026-03-10",
            "plant": "P1",
            "estimated_unit_price": {"amount": "3.20", "currency": "EUR"},
        },
        "need_by",
    ),
    "supplier-portal": (
        "/api/asns",
        {
            "asn_number": "ASN-1",
            "supplier_id": "S1",
            "shipped_at": WHEN,
            "expected_at": "2026-03-02T06:00:00Z",
            "lines": [
                {
                    "line_number": 1,
                    "item": "BRK-001",
                    "quantity": QUANTITY,
                    "lot": "LOT-7",
                    "purchase_order": None,
                }
            ],
        },
        "shipped_at",
    ),
}

KEY = {"X-API-Key": "plantbus-key"}
Started = tuple[RefServer, aiohttp.ClientSession]
StartServer = Callable[..., Awaitable[Started]]


@pytest.fixture
async def serve() -> AsyncIterator[StartServer]:
    """Start reference servers with a client session and stop both afterwards."""
    opened: list[Started] = []

    async def start(system: str, **options: Any) -> Started:
        server = build(system, **options)
        await server.start()
        session = aiohttp.ClientSession(base_url=server.url)
        opened.append((server, session))
        return server, session

    yield start
    for server, session in opened:
        await session.close()
        await server.stop()


@pytest.mark.parametrize("system", list(SYSTEMS))
async def test_refserver_openapi_lists_paths(serve: StartServer, system: str) -> None:
    _server, session = await serve(system)

    async with session.get("/openapi.json") as response:
        document = await response.json()

    assert response.status == 200
    path = SAMPLES[system][0]
    assert "post" in document["paths"][path]
    assert "get" in document["paths"][path]
    assert f"{path}/{{record_id}}" in document["paths"]
    assert "/oauth/token" in document["paths"]
    assert not any(p.startswith("/_admin") for p in document["paths"])
    schemes = document["components"]["securitySchemes"]
    assert schemes["oauth2"]["flows"]["clientCredentials"]["tokenUrl"] == "/oauth/token"
    assert schemes["apiKey"]["name"] == "X-API-Key"


@pytest.mark.parametrize("system", list(SYSTEMS))
async def test_refserver_creates_and_lists_record(
    serve: StartServer, system: str
) -> None:
    _server, session = await serve(system)
    path, body, _ = SAMPLES[system]

    async with session.post(path, json=body, headers=KEY) as response:
        created = await response.json()
    async with session.get(f"{path}/{created['id']}", headers=KEY) as response:
        fetched = await response.json()

    assert response.status == 200
    assert fetched == created
    assert created["status"]
    for name, value in body.items():
        assert created[name] == value


@pytest.mark.parametrize("system", list(SYSTEMS))
async def test_refserver_rejects_missing_credentials(
    serve: StartServer, system: str
) -> None:
    server, session = await serve(system)
    path, body, _ = SAMPLES[system]

    async with session.post(path, json=body) as response:
        problem = await response.json()
    async with session.get(path, headers={"Authorization": "Bearer nope"}) as bad:
        pass

    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.content_type == "application/problem+json"
    assert problem["status"] == 401
    assert bad.status == 401
    assert not any(server.collections[name].records for name in server.collections)


@pytest.mark.parametrize("system", list(SYSTEMS))
async def test_refserver_validation_names_field_value_rule(
    serve: StartServer, system: str
) -> None:
    _server, session = await serve(system)
    path, body, field = SAMPLES[system]

    async with session.post(path, json={**body, field: "yesterday"}, headers=KEY) as r:
        problem = await r.json()

    assert r.status == 422
    assert r.content_type == "application/problem+json"
    assert problem["type"].endswith(":validation")
    assert f"`{field}`" in problem["detail"]
    [error] = problem["errors"]
    assert error["field"] == field
    assert error["value"] == "yesterday"
    assert error["pointer"] == f"#/{field}"
    assert error["rule"]


async def test_refserver_validation_reports_nested_field(serve: StartServer) -> None:
    _server, session = await serve("qms")
    path, body, _ = SAMPLES["qms"]
    broken = {**body, "quantity": {"value": "12,5", "unit": "kg"}, "extra": 1}

    async with session.post(path, json=broken, headers=KEY) as response:
        problem = await response.json()

    fields = {error["field"]: error for error in problem["errors"]}
    assert fields["quantity.value"]["value"] == "12,5"
    assert "pattern" in fields["quantity.value"]["rule"]
    assert "extra" in fields


async def test_refserver_oauth_token_grants_access(serve: StartServer) -> None:
    _server, session = await serve("wms", token_lifetime_seconds=0.3)
    path, body, _ = SAMPLES["wms"]
    form = {
        "grant_type": "client_credentials",
        "client_id": "plantbus",
        "client_secret": "plantbus-secret",
    }

    async with session.post("/oauth/token", data=form) as response:
        token = await response.json()
    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    async with session.post(path, json=body, headers=bearer) as created:
        pass
    await asyncio.sleep(0.4)
    async with session.get(path, headers=bearer) as expired:
        pass

    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 0.3
    assert created.status == 201
    assert expired.status == 401
    assert "invalid_token" in expired.headers["WWW-Authenticate"]


async def test_refserver_oauth_rejects_wrong_secret(serve: StartServer) -> None:
    server, session = await serve("wms")
    form = {
        "grant_type": "client_credentials",
        "client_id": "plantbus",
        "client_secret": "guess",
    }

    async with session.post("/oauth/token", data=form) as response:
        error = await response.json()
    async with session.post(
        "/oauth/token", data={**form, "grant_type": "password"}
    ) as grant:
        grant_error = await grant.json()

    assert response.status == 401
    assert error["error"] == "invalid_client"
    assert grant.status == 400
    assert grant_error["error"] == "unsupported_grant_type"
    assert server.tokens_issued == 0


async def test_refserver_idempotency_key_replays_record(serve: StartServer) -> None:
    server, session = await serve("procurement")
    path, body, _ = SAMPLES["procurement"]
    headers = {**KEY, "Idempotency-Key": "evt-1"}

    async with session.post(path, json=body, headers=headers) as first:
        created = await first.json()
    async with session.post(path, json=body, headers=headers) as second:
        replayed = await second.json()
    async with session.post(
        path, json={**body, "item": "OTHER"}, headers=headers
    ) as reused:
        problem = await reused.json()
    async with session.post(path, json=body, headers=KEY) as without_key:
        pass

    assert second.status == 201
    assert second.headers["Idempotent-Replayed"] == "true"
    assert replayed == created
    assert reused.status == 422
    assert problem["type"].endswith(":idempotency-key-reused")
    assert without_key.status == 201
    assert len(server.collections["requisition"].records) == 2


async def test_refserver_business_key_conflict_returns_409(serve: StartServer) -> None:
    _server, session = await serve("supplier-portal")
    path, body, _ = SAMPLES["supplier-portal"]

    async with session.post(path, json=body, headers=KEY) as first:
        created = await first.json()
    async with session.post(path, json=body, headers=KEY) as second:
        problem = await second.json()

    assert second.status == 409
    assert problem["existing_id"] == created["id"]
    assert second.headers["Location"] == f"{path}/{created['id']}"


async def test_refserver_list_pages_through_records(serve: StartServer) -> None:
    _server, session = await serve("qms")
    path, body, _ = SAMPLES["qms"]
    for number in range(5):
        lot = {**body, "lot": f"LOT-{number}"}
        async with session.post(path, json=lot, headers=KEY) as response:
            assert response.status == 201

    async with session.get(path, params={"limit": 2}, headers=KEY) as response:
        first = await response.json()
    async with session.get(first["next"], headers=KEY) as response:
        second = await response.json()
    async with session.get(path, params={"lot": "LOT-3"}, headers=KEY) as response:
        filtered = await response.json()

    assert first["total"] == 5
    assert [item["lot"] for item in first["items"]] == ["LOT-0", "LOT-1"]
    assert [item["lot"] for item in second["items"]] == ["LOT-2", "LOT-3"]
    assert [item["lot"] for item in filtered["items"]] == ["LOT-3"]
    assert filtered["next"] is None


@pytest.mark.parametrize("system", list(SYSTEMS))
async def test_refserver_rate_limit_returns_429(
    serve: StartServer, system: str
) -> None:
    _server, session = await serve(
        system, rate_limit=RateLimit(rate_per_second=0.5, burst=2)
    )
    path = SAMPLES[system][0]

    statuses = []
    for _ in range(3):
        async with session.get(path, headers=KEY) as response:
            statuses.append(response.status)

    assert statuses == [200, 200, 429]
    assert response.headers["Retry-After"] == "2"


async def test_refserver_admin_switches_faults(serve: StartServer) -> None:
    _server, session = await serve("wms")
    path = SAMPLES["wms"][0]

    async def status_with(faults: dict[str, Any]) -> aiohttp.ClientResponse:
        async with session.put("/_admin/faults", json=faults) as response:
            assert response.status == 200
        async with session.get(path, headers=KEY) as response:
            return response

    error = await status_with({"error_share": 1.0})
    unavailable = await status_with(
        {"unavailable_share": 1.0, "retry_after_seconds": 4}
    )
    throttled = await status_with({"throttle_share": 1.0})
    started = time.monotonic()
    slow = await status_with({"latency_seconds": 0.3})
    slow_seconds = time.monotonic() - started
    healthy = await status_with({})

    assert error.status == 500
    assert unavailable.status == 503
    assert unavailable.headers["Retry-After"] == "4"
    assert throttled.status == 429
    assert slow.status == 200
    assert slow_seconds >= 0.3
    assert healthy.status == 200


async def test_refserver_hang_released_when_faults_change(serve: StartServer) -> None:
    _server, session = await serve("wms")
    path = SAMPLES["wms"][0]
    async with session.put("/_admin/faults", json={"hang_share": 1.0}) as response:
        assert response.status == 200

    request = asyncio.create_task(session.get(path, headers=KEY))
    await asyncio.sleep(0.3)
    hanging = not request.done()
    async with session.put("/_admin/faults", json={}) as response:
        assert response.status == 200
    released = await asyncio.wait_for(request, 5)

    assert hanging
    assert released.status == 504
    released.release()


async def test_refserver_admin_reset_and_stats(serve: StartServer) -> None:
    server, session = await serve("qms")
    path, body, _ = SAMPLES["qms"]
    async with session.post(path, json=body, headers=KEY):
        pass

    async with session.get("/_admin/stats") as response:
        stats = await response.json()
    async with session.post("/_admin/reset") as response:
        assert response.status == 204

    assert stats["records"] == {"nonconformance": 1}
    assert stats["connections"] == 1
    assert not server.collections["nonconformance"].records


async def test_supplier_portal_upload_and_download(serve: StartServer) -> None:
    _server, session = await serve("supplier-portal")
    document = b"UNH+1+DESADV:D:96A:UN'BGM+351+ASN-9+9'UNT+3+1'"
    headers = {**KEY, "Content-Type": "application/EDIFACT", "Idempotency-Key": "u1"}
    url = "/api/asn-documents/asn-9.edi"

    async with session.put(
        url, params={"supplier_id": "S1"}, data=document, headers=headers
    ) as r:
        created = await r.json()
    async with session.put(
        url, params={"supplier_id": "S1"}, data=document, headers=headers
    ) as r2:
        replayed = await r2.json()
    async with session.get(
        f"/api/asn-documents/{created['id']}/content", headers=KEY
    ) as r3:
        content = await r3.read()
    async with session.get(
        "/api/asn-documents", params={"supplier_id": "S1"}, headers=KEY
    ) as r4:
        listed = await r4.json()
    async with session.put(
        url,
        params={"supplier_id": "S1"},
        data=b"x",
        headers={**KEY, "Content-Type": "image/png"},
    ) as r5:
        pass

    assert r.status == 201
    assert created["size"] == len(document)
    assert replayed["id"] == created["id"]
    assert content == document
    assert listed["total"] == 1
    assert r5.status == 415


async def test_supplier_portal_acknowledgement_pickup(serve: StartServer) -> None:
    _server, session = await serve("supplier-portal")
    ack = {
        "asn_number": "ASN-1",
        "supplier_id": "S1",
        "decision": "accepted",
        "acknowledged_at": WHEN,
    }

    async with session.post("/api/acknowledgements", json=ack, headers=KEY) as r:
        created = await r.json()
    pending_query = {"supplier_id": "S1", "status": "pending"}
    async with session.get(
        "/api/acknowledgements", params=pending_query, headers=KEY
    ) as r:
        pending = await r.json()
    pickup = f"/api/acknowledgements/{created['id']}/pickup"
    async with session.post(pickup, headers=KEY) as r:
        picked = await r.json()
    async with session.post(pickup, headers=KEY) as r:
        again = await r.json()
    async with session.get(
        "/api/acknowledgements", params=pending_query, headers=KEY
    ) as r:
        after = await r.json()

    assert created["status"] == "pending"
    assert [item["id"] for item in pending["items"]] == [created["id"]]
    assert picked["status"] == "picked_up"
    assert again["picked_up_at"] == picked["picked_up_at"]
    assert after["total"] == 0


async def test_supplier_portal_rejection_needs_reason(serve: StartServer) -> None:
    _server, session = await serve("supplier-portal")
    ack = {
        "asn_number": "ASN-1",
        "supplier_id": "S1",
        "decision": "rejected",
        "acknowledged_at": WHEN,
    }

    async with session.post("/api/acknowledgements", json=ack, headers=KEY) as r:
        problem = await r.json()

    assert r.status == 422
    assert "reason" in problem["detail"]


@pytest.mark.parametrize(
    ("method", "path", "noun"),
    [
        ("GET", "/api/asns/ASN-999999", "asn record"),
        ("GET", "/api/asn-documents/DOC-999999/content", "ASN document"),
        ("POST", "/api/acknowledgements/ACK-999999/pickup", "acknowledgement"),
    ],
)
async def test_supplier_portal_unknown_id_is_404(
    serve: StartServer, method: str, path: str, noun: str
) -> None:
    _server, session = await serve("supplier-portal")

    async with session.request(method, path, headers=KEY) as r:
        problem = await r.json()

    record_id = path.split("/")[3]
    assert r.status == 404
    assert problem["type"].endswith(":not-found")
    assert problem["detail"] == f"No {noun} has the id {record_id!r}."


async def test_sim_serve_command_runs_server() -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "plantbus.cli",
            "sim",
            "serve",
            "cmms",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ},
    )
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 20
            while True:
                try:
                    async with session.get(
                        f"http://127.0.0.1:{port}/openapi.json"
                    ) as r:
                        document = await r.json()
                        break
                except aiohttp.ClientConnectionError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise
                    await asyncio.sleep(0.1)
    finally:
        process.terminate()
        process.wait(10)

    assert "/api/work-orders" in document["paths"]
