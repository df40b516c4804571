"""Health, catalogue and framework errors of the API."""

from __future__ import annotations

import json

import httpx
import pytest

from plantbus.api.app import create_app
from plantbus.events.catalogue import Catalogue

from .support import MemoryLog, build_ingest


async def test_health_answers_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_catalogue_lists_every_event_type(
    client: httpx.AsyncClient, catalogue: Catalogue
) -> None:
    response = await client.get("/v1/catalogue")

    assert response.status_code == 200
    listed = {entry["name"]: entry for entry in response.json()["event_types"]}
    assert set(listed) == {event_type.name for event_type in catalogue}
    workorder = listed["production.workorder.completed.v1"]
    assert workorder["version"] == "1.0.0"
    assert workorder["domain"] == "production"
    assert workorder["owner"] == "production-integration"
    assert workorder["sla"]["name"] == "operational"
    assert workorder["sla"]["target_seconds"] == 30.0
    assert workorder["schema_id"] == (
        "urn:plantbus:schema:production.workorder.completed.v1:1.0.0"
    )


async def test_catalogue_type_returns_json_schema(
    client: httpx.AsyncClient, catalogue: Catalogue
) -> None:
    response = await client.get("/v1/catalogue/production.workorder.completed.v1")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/schema+json"
    expected = catalogue.get("production.workorder.completed.v1")
    assert expected is not None
    assert response.json() == expected.schema


async def test_catalogue_unknown_type_answers_404_problem(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/v1/catalogue/io.example.nothing")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert "'io.example.nothing'" in response.json()["detail"]


async def test_unknown_path_answers_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/events")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["title"] == "Not Found"


async def test_wrong_method_answers_405_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/events")

    assert response.status_code == 405
    assert response.json()["detail"] == "GET is not allowed on '/v1/events'."


async def test_openapi_documents_event_media_types(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")

    operation = response.json()["paths"]["/v1/events"]["post"]
    content = operation["requestBody"]["content"]
    assert "application/cloudevents+json" in content
    assert "application/cloudevents-batch+json" in content
    assert "422" in operation["responses"]


def test_create_app_rejects_nonpositive_body_limit(catalogue: Catalogue) -> None:
    ingest = build_ingest(MemoryLog(), catalogue, allow_unknown_types=False)

    with pytest.raises(ValueError, match="max_body_bytes is 0"):
        create_app(ingest, catalogue=catalogue, max_body_bytes=0)


async def test_metrics_exposes_ingest_counters(client) -> None:
    event = {
        "specversion": "1.0",
        "id": "metrics-1",
        "source": "/test",
        "type": "production.workorder.started.v1",
        "data": {"work_order_id": "WO-M", "started_at": "2026-12-01T06:00:00Z"},
    }
    accepted = await client.post(
        "/v1/events",
        content=json.dumps(event),
        headers={"Content-Type": "application/cloudevents+json"},
    )
    assert accepted.status_code == 202

    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert (
        'plantbus_events_ingested_total{type="production.workorder.started.v1"}'
        in response.text
    )
