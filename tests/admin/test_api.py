"""The `/v1/admin` endpoints against real SQLite files."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from plantbus.admin import AdminService
from plantbus.api.app import create_app
from plantbus.config import load_hub
from plantbus.events.catalogue import Catalogue
from plantbus.ingest import Ingestor
from plantbus.state.store import DeadLetterFilter

from .seed import BINARY, _seed


@pytest.fixture
async def seeded(hub_file: Path, stores) -> AsyncIterator[dict[str, int]]:
    ids = await _seed(hub_file)
    yield ids


@pytest.fixture
async def client(hub_file: Path, stores, seeded) -> AsyncIterator[httpx.AsyncClient]:
    log, state = stores
    admin = AdminService(state, load_hub(hub_file))
    catalogue = Catalogue.load()
    app = create_app(Ingestor(log, catalogue), catalogue=catalogue, admin=admin)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as http:
        yield http


async def test_admin_list_filters_dead_letters(client, seeded) -> None:
    everything = await client.get("/v1/admin/dead-letters")
    by_sink = await client.get("/v1/admin/dead-letters", params={"sink": "erp"})
    by_error = await client.get("/v1/admin/dead-letters", params={"error": "JSON"})
    future = await client.get(
        "/v1/admin/dead-letters", params={"since": "2999-01-01T00:00:00Z"}
    )

    assert everything.status_code == 200
    assert [x["id"] for x in everything.json()["dead_letters"]] == [1, 2, 3]
    assert [x["id"] for x in by_sink.json()["dead_letters"]] == [seeded["delivery"]]
    assert [x["id"] for x in by_error.json()["dead_letters"]] == [seeded["http"]]
    assert future.json()["dead_letters"] == []
    assert "payload" not in everything.json()["dead_letters"][0]


async def test_admin_show_returns_payload_and_attempts(client, seeded) -> None:
    delivery = await client.get(f"/v1/admin/dead-letters/{seeded['delivery']}")
    binary = await client.get(f"/v1/admin/dead-letters/{seeded['http']}")
    missing = await client.get("/v1/admin/dead-letters/99")

    assert delivery.status_code == 200
    body = delivery.json()
    assert body["status"] == "open"
    assert body["sink"] == "erp"
    assert [a["error"] for a in body["attempts"]] == ["closed", "still closed"]
    assert '"work_order_id":"WO1"' in body["payload"]
    assert base64.b64decode(binary.json()["payload_base64"]) == BINARY
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


async def test_admin_discard_by_filter_audits(client, stores, seeded) -> None:
    _, state = stores

    response = await client.post(
        "/v1/admin/dead-letters/discard",
        json={"filter": {"sink": "erp"}, "actor": "anna", "reason": "duplicate"},
    )
    audit = await client.get("/v1/admin/audit")

    assert response.status_code == 200
    assert response.json() == {"done": [seeded["delivery"]], "rejected": []}
    (letter,) = await state.dead_letters(DeadLetterFilter(status="discarded"))
    assert letter.id == seeded["delivery"]
    (record,) = audit.json()["audit"]
    assert record["actor"] == "anna"
    assert record["action"] == "dead_letter.discard"
    assert record["details"]["reason"] == "duplicate"
    assert record["details"]["filter"] == {"sink": "erp"}


async def test_admin_discard_without_reason_is_422(client) -> None:
    response = await client.post("/v1/admin/dead-letters/discard", json={"ids": [1]})

    assert response.status_code == 422


async def test_admin_redrive_by_ids_reports_rejects(client, stores, seeded) -> None:
    _, state = stores

    response = await client.post(
        "/v1/admin/dead-letters/redrive",
        json={"ids": [seeded["delivery"], seeded["http"]], "actor": "ops"},
    )

    assert response.status_code == 200
    body = response.json()
    assert body["done"] == [seeded["delivery"]]
    assert [r["id"] for r in body["rejected"]] == [seeded["http"]]
    assert "not a folder source" in body["rejected"][0]["reason"]
    (letter,) = await state.dead_letters(DeadLetterFilter(status="redriving"))
    assert letter.id == seeded["delivery"]
    (record,) = await state.audit_log()
    assert record.actor == "ops"


async def test_admin_redrive_without_selection_is_422(client, stores) -> None:
    _, state = stores

    response = await client.post("/v1/admin/dead-letters/redrive", json={})

    assert response.status_code == 422
    assert "needs at least one non-empty filter" in response.json()["detail"]
    assert await state.audit_log() == []


async def test_admin_routes_absent_without_service(stores) -> None:
    log, _ = stores
    catalogue = Catalogue.load()
    app = create_app(Ingestor(log, catalogue), catalogue=catalogue)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as http:
        response = await http.get("/v1/admin/dead-letters")

    assert response.status_code == 404
