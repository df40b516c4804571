"""`POST /v1/events` with catalogue events, every content mode and every error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import orjson
import pytest

from plantbus.backbone.log import Appended
from plantbus.errors import BackboneError, BatchRejected, SchemaError, Violation
from plantbus.events.envelope import Event

from .conftest import ClientFactory
from .support import ReadableLog, batched, read_all, structured

WORKORDER = "production.workorder.completed.v1"


def workorder_event(event_id: str = "evt-1", **data: Any) -> dict[str, Any]:
    """Return a valid work order completion in the CloudEvents JSON format."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "mes://plant-1/line-2",
        "type": WORKORDER,
        "time": "2026-03-01T06:00:00Z",
        "data": {
            "work_order_id": "WO-1001",
            "item": "PUMP-200",
            "quantity": {"value": "12.5", "unit": "u"},
            "completed_at": "2026-03-01T05:59:30Z",
            **data,
        },
    }


def invalid_workorder_event(event_id: str) -> dict[str, Any]:
    """Return a work order completion with four invalid fields."""
    document = workorder_event(event_id, quantity={"value": "12,5", "unit": "u"})
    del document["data"]["work_order_id"]
    document["time"] = "yesterday"
    document["data"]["completed_at"] = "01.03.2026 06:00"
    return document


def fields_of(problem: dict[str, Any]) -> list[str]:
    return sorted(entry["field"] for entry in problem["errors"])


async def test_post_events_accepts_catalogue_event(
    client: httpx.AsyncClient, event_log: ReadableLog
) -> None:
    response = await client.post("/v1/events", **structured(workorder_event()))

    assert response.status_code == 202, response.text
    [result] = response.json()["events"]
    assert result["id"] == "evt-1"
    assert result["duplicate"] is False
    assert isinstance(result["offset"], int)
    [record] = await read_all(event_log)
    assert record.offset == result["offset"]
    assert record.partition == result["partition"]
    assert record.event.partitionkey == "WO-1001"
    assert record.event.dataschema == (
        "urn:plantbus:schema:production.workorder.completed.v1:1.0.0"
    )


async def test_post_events_lists_every_invalid_field(
    client: httpx.AsyncClient, event_log: ReadableLog
) -> None:
    response = await client.post(
        "/v1/events", **structured(invalid_workorder_event("evt-bad"))
    )

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:plantbus:problem:invalid-events"
    assert problem["title"] == "Invalid Events"
    assert problem["status"] == 422
    assert problem["instance"].startswith("urn:uuid:")
    assert "4 field(s)" in problem["detail"]
    assert fields_of(problem) == [
        "data.completed_at",
        "data.quantity.value",
        "data.work_order_id",
        "time",
    ]
    by_field = {entry["field"]: entry for entry in problem["errors"]}
    assert by_field["data.quantity.value"]["value"] == "12,5"
    assert "decimal" in by_field["data.quantity.value"]["rule"]
    assert by_field["data.work_order_id"]["value"] is None
    assert by_field["data.work_order_id"]["rule"] == "the field is required"
    assert by_field["time"]["value"] == "yesterday"
    assert all(entry["event_id"] == "evt-bad" for entry in problem["errors"])
    assert await read_all(event_log) == []


async def test_post_events_batch_lists_both_invalid_events(
    client: httpx.AsyncClient, event_log: ReadableLog
) -> None:
    batch = [
        workorder_event("evt-ok"),
        invalid_workorder_event("evt-bad-1"),
        workorder_event("evt-ok-2"),
        invalid_workorder_event("evt-bad-2"),
    ]

    response = await client.post("/v1/events", **batched(batch))

    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["detail"].startswith("2 of 4 events in the batch are invalid")
    indexes = {(entry["index"], entry["event_id"]) for entry in problem["errors"]}
    assert indexes == {(1, "evt-bad-1"), (3, "evt-bad-2")}
    assert len(problem["errors"]) == 8
    assert await read_all(event_log) == []


async def test_post_events_duplicate_id_answers_duplicate(
    client: httpx.AsyncClient, event_log: ReadableLog
) -> None:
    first = await client.post("/v1/events", **structured(workorder_event("evt-7")))
    second = await client.post("/v1/events", **structured(workorder_event("evt-7")))

    assert first.status_code == 202
    assert second.status_code == 202
    assert second.json()["events"][0]["duplicate"] is True
    assert second.json()["events"][0]["offset"] == first.json()["events"][0]["offset"]
    assert len(await read_all(event_log)) == 1


async def test_post_events_unknown_type_rejected_by_default(
    client: httpx.AsyncClient,
) -> None:
    document = {
        "specversion": "1.0",
        "id": "x-1",
        "source": "test",
        "type": "io.example.x",
    }

    response = await client.post("/v1/events", **structured(document))

    assert response.status_code == 422
    [entry] = response.json()["errors"]
    assert entry["field"] == "type"
    assert entry["value"] == "io.example.x"
    assert "not in the event catalogue" in entry["rule"]


async def test_post_events_invalid_envelope_also_checks_data(
    client: httpx.AsyncClient,
) -> None:
    document = workorder_event("evt-3", quantity={"value": "-1", "unit": "u"})
    del document["source"]

    response = await client.post("/v1/events", **structured(document))

    assert response.status_code == 422
    assert fields_of(response.json()) == ["data.quantity.value", "source"]


async def test_post_events_binary_mode_decodes_headers(
    client: httpx.AsyncClient, event_log: ReadableLog
) -> None:
    data = workorder_event()["data"]
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "evt-binary",
        "ce-source": "mes://plant-1/line%202",
        "ce-type": WORKORDER,
        "ce-subject": "Pr%C3%BCfstand%20%E2%82%AC",
        "ce-plant": "plant-1",
        "content-type": "application/json",
    }

    response = await client.post(
        "/v1/events", content=orjson.dumps(data), headers=headers
    )

    assert response.status_code == 202, response.text
    [record] = await read_all(event_log)
    assert record.event.source == "mes://plant-1/line 2"
    assert record.event.subject == "Prüfstand €"
    assert record.event.plant == "plant-1"
    assert record.event.datacontenttype == "application/json"
    assert record.event.data == data


async def test_post_events_binary_mode_keeps_bytes(
    open_client: httpx.AsyncClient, event_log: ReadableLog
) -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "evt-bytes",
        "ce-source": "plc",
        "ce-type": "io.example.raw",
        "content-type": "application/octet-stream",
    }

    response = await open_client.post(
        "/v1/events", content=b"\x00\xffraw", headers=headers
    )

    assert response.status_code == 202, response.text
    [record] = await read_all(event_log)
    assert record.event.data_binary == b"\x00\xffraw"


async def test_post_events_binary_mode_decodes_text_charset(
    open_client: httpx.AsyncClient, event_log: ReadableLog
) -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "evt-text",
        "ce-source": "plc",
        "ce-type": "io.example.text",
        "content-type": "text/plain; charset=latin-1",
    }

    response = await open_client.post(
        "/v1/events", content="Prüfung".encode("latin-1"), headers=headers
    )

    assert response.status_code == 202, response.text
    [record] = await read_all(event_log)
    assert record.event.data == "Prüfung"


async def test_post_events_binary_mode_rejects_bad_percent_encoding(
    open_client: httpx.AsyncClient,
) -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "evt-enc",
        "ce-source": "plc",
        "ce-type": "io.example.x",
        "ce-subject": "bad%FF",
        "content-type": "application/json",
    }

    response = await open_client.post("/v1/events", content=b"{}", headers=headers)

    assert response.status_code == 422
    [entry] = response.json()["errors"]
    assert entry["field"] == "ce-subject"
    assert entry["value"] == "bad%FF"


async def test_post_events_binary_mode_reports_missing_headers(
    open_client: httpx.AsyncClient,
) -> None:
    headers = {"ce-id": "evt-partial", "content-type": "application/json"}

    response = await open_client.post("/v1/events", content=b"{}", headers=headers)

    assert response.status_code == 422
    assert fields_of(response.json()) == ["source", "specversion", "type"]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/cloudevents+json", b'{"specversion": "1.0", "id": '),
        ("application/cloudevents-batch+json", b"[{}, {]"),
        ("application/json", b"{'single': 'quotes'}"),
    ],
)
async def test_post_events_malformed_json_answers_400(
    open_client: httpx.AsyncClient, content_type: str, body: bytes
) -> None:
    headers = {"content-type": content_type, "ce-specversion": "1.0"}

    response = await open_client.post("/v1/events", content=body, headers=headers)

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:plantbus:problem:malformed-json"
    assert "line 1, column" in problem["detail"]
    assert "character" in problem["detail"]


async def test_post_events_batch_not_array_answers_422(
    open_client: httpx.AsyncClient,
) -> None:
    response = await open_client.post("/v1/events", **batched({"specversion": "1.0"}))

    assert response.status_code == 422
    [entry] = response.json()["errors"]
    assert entry["field"] == "$"
    assert "JSON array" in entry["rule"]


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "text/plain", "application/cloudevents+xml", None],
)
async def test_post_events_without_cloudevent_answers_415(
    open_client: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}

    response = await open_client.post("/v1/events", content=b"{}", headers=headers)

    assert response.status_code == 415
    assert response.json()["type"] == "urn:plantbus:problem:unsupported-media-type"


async def test_post_events_unknown_charset_answers_415(
    open_client: httpx.AsyncClient,
) -> None:
    headers = {"content-type": "application/cloudevents+json; charset=klingon"}

    response = await open_client.post("/v1/events", content=b"{}", headers=headers)

    assert response.status_code == 415
    assert "'klingon'" in response.json()["detail"]


async def test_post_events_body_over_limit_answers_413(
    make_client: ClientFactory, event_log: ReadableLog
) -> None:
    client = await make_client(max_body_bytes=1000)
    batch = [workorder_event(f"evt-{n}") for n in range(20)]

    response = await client.post("/v1/events", **batched(batch))

    assert response.status_code == 413
    assert "limit of 1000 bytes" in response.json()["detail"]
    assert await read_all(event_log) == []


async def test_post_events_streamed_body_over_limit_answers_413(
    make_client: ClientFactory,
) -> None:
    client = await make_client(max_body_bytes=1000)

    async def chunks() -> Any:
        for _ in range(20):
            yield b" " * 100

    # A streamed body has no Content-Length, so the limit applies while reading.
    response = await client.post(
        "/v1/events",
        content=chunks(),
        headers={"content-type": "application/cloudevents+json"},
    )

    assert response.status_code == 413


async def test_post_events_empty_batch_answers_202(
    open_client: httpx.AsyncClient,
) -> None:
    response = await open_client.post("/v1/events", **batched([]))

    assert response.status_code == 202
    assert response.json() == {"events": []}


async def test_post_events_maps_batch_rejected_from_ingest(
    make_client: ClientFactory,
) -> None:
    async def rejecting_ingest(events: Sequence[Event]) -> list[Appended]:
        violation = Violation("data.lot", "L 1", "must not contain spaces")
        error = SchemaError(events[1].id, [violation])
        raise BatchRejected([(1, error)])

    client = await make_client(ingest=rejecting_ingest)
    batch = [workorder_event("evt-a"), workorder_event("evt-b")]

    response = await client.post("/v1/events", **batched(batch))

    assert response.status_code == 422
    [entry] = response.json()["errors"]
    assert entry["index"] == 1
    assert entry["event_id"] == "evt-b"
    assert entry["field"] == "data.lot"
    assert entry["rule"] == "must not contain spaces"


async def test_post_events_backbone_failure_answers_503(
    make_client: ClientFactory,
) -> None:
    async def failing_ingest(events: Sequence[Event]) -> list[Appended]:
        raise BackboneError("The disk is full.")

    client = await make_client(ingest=failing_ingest)

    response = await client.post("/v1/events", **structured(workorder_event()))

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "The disk is full." in response.json()["detail"]


async def test_post_events_unexpected_error_answers_500_problem(
    make_client: ClientFactory,
) -> None:
    async def broken_ingest(events: Sequence[Event]) -> list[Appended]:
        raise RuntimeError("bug")

    client = await make_client(ingest=broken_ingest)

    response = await client.post("/v1/events", **structured(workorder_event()))

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 500
