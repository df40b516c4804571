"""Hostile requests to `POST /v1/events`: every one gets a 4xx naming the field."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
import pytest

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


def progressed(**attributes: Any) -> dict[str, Any]:
    """Return a valid work order progress event with `attributes` replaced."""
    document: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "/hostile/mes",
        "type": "production.workorder.progressed.v1",
        "data": {
            "work_order_id": "WO-1",
            "quantity": {"value": "1", "unit": "u"},
            "duration_seconds": "30",
        },
    }
    document.update(attributes)
    return document


def with_data(**fields: Any) -> dict[str, Any]:
    """Return a valid work order progress event with data `fields` replaced."""
    document = progressed()
    document["data"].update(fields)
    return document


async def post(
    client: httpx.AsyncClient, body: bytes, content_type: str = STRUCTURED
) -> httpx.Response:
    return await client.post(
        "/v1/events", content=body, headers={"content-type": content_type}
    )


def error_fields(response: httpx.Response) -> list[str]:
    return [error["field"] for error in response.json()["errors"]]


@pytest.mark.parametrize(
    "value",
    [
        "1e5",
        "-0",
        "\uff10\uff11",
        " 1",
        "1.",
        "NaN",
        "Infinity",
        "+1",
        ".5",
        "0x10",
        "\u0663",
        "",
    ],
)
async def test_events_post_rejects_malformed_quantity(
    client: httpx.AsyncClient, value: str
) -> None:
    document = with_data(quantity={"value": value, "unit": "u"})

    response = await post(client, orjson.dumps(document))

    assert response.status_code == 422
    assert error_fields(response) == ["data.quantity.value"]


@pytest.mark.parametrize("literal", [b"NaN", b"1e999", b"Infinity"])
async def test_events_post_rejects_non_finite_json_number(
    client: httpx.AsyncClient, literal: bytes
) -> None:
    body = orjson.dumps(with_data(duration_seconds="MARK")).replace(b'"MARK"', literal)

    response = await post(client, body)

    assert response.status_code == 400
    assert "not valid JSON" in response.json()["detail"]


async def test_events_post_rejects_extension_integer_beyond_32_bits(
    client: httpx.AsyncClient,
) -> None:
    response = await post(client, orjson.dumps(progressed(shift=2**40)))

    assert response.status_code == 422
    assert error_fields(response) == ["shift"]


async def test_events_post_rejects_deeply_nested_json(
    client: httpx.AsyncClient,
) -> None:
    body = b"[" * 100_000 + b"]" * 100_000

    response = await post(client, body, BATCH)

    assert response.status_code == 400


async def test_events_post_rejects_body_over_limit(client: httpx.AsyncClient) -> None:
    body = orjson.dumps(progressed(subject="x" * (11 * 1024 * 1024)))

    response = await post(client, body)

    assert response.status_code == 413


async def test_events_post_accepts_batch_of_10000(client: httpx.AsyncClient) -> None:
    batch = [with_data(work_order_id=f"WO-{n % 50}") for n in range(10_000)]

    response = await post(client, orjson.dumps(batch), BATCH)

    assert response.status_code == 202
    assert len(response.json()["events"]) == 10_000


@pytest.mark.parametrize(
    ("attribute", "value"),
    [("partitionkey", 5), ("partitionkey", True), ("correlationid", 5), ("plant", 7)],
)
async def test_events_post_rejects_non_string_plantbus_extension(
    client: httpx.AsyncClient, attribute: str, value: object
) -> None:
    response = await post(client, orjson.dumps(progressed(**{attribute: value})))

    assert response.status_code == 422
    assert error_fields(response) == [attribute]


@pytest.mark.parametrize(
    "moment",
    [
        "2026-03-01T06:00:00+99:99",
        "2026-02-30T06:00:00Z",
        "2026-03-01T25:00:00Z",
    ],
)
async def test_events_post_rejects_impossible_data_timestamp(
    client: httpx.AsyncClient, moment: str
) -> None:
    response = await post(client, orjson.dumps(with_data(reported_at=moment)))

    assert response.status_code == 422
    assert error_fields(response) == ["data.reported_at"]


@pytest.mark.parametrize(
    ("attribute", "value"),
    [("id", "event\u0000one"), ("source", "/mes\u001f"), ("subject", "WO\u0085")],
)
async def test_events_post_rejects_control_character_in_attribute(
    client: httpx.AsyncClient, attribute: str, value: str
) -> None:
    response = await post(client, orjson.dumps(progressed(**{attribute: value})))

    assert response.status_code == 422
    assert error_fields(response) == [attribute]


async def test_events_post_caps_problem_document_size(
    client: httpx.AsyncClient,
) -> None:
    document = with_data(**{f"field{n}": n for n in range(20_000)})
    body = orjson.dumps(document)

    response = await post(client, body)

    assert response.status_code == 422
    assert len(response.content) < 1024 * 1024
