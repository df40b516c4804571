"""CloudEvents 1.0 JSON format conformance, through the API and through Event."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from plantbus.errors import EnvelopeError
from plantbus.events.envelope import Event

from .support import ReadableLog, batched, read_all, samples_root, structured

FORMAT_DIR = Path("cloudevents") / "conformance" / "format" / "json"


def _cases(name: str) -> list[Any]:
    # Parametrisation runs before fixtures exist, so `samples_dir` is not usable.
    path = samples_root() / FORMAT_DIR / name
    tests = orjson.loads(path.read_bytes())["tests"]
    return [pytest.param(test, id=test["id"]) for test in tests]


def _without_nulls(document: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in document.items() if value is not None}


@pytest.mark.parametrize("case", _cases("valid-events.json"))
def test_event_from_dict_accepts_valid_event(case: dict[str, Any]) -> None:
    event = Event.from_dict(case["event"])

    assert event.id == case["event"]["id"]
    assert event.to_dict() == _without_nulls(case["event"])


@pytest.mark.parametrize("case", _cases("invalid-events.json"))
def test_event_from_dict_rejects_invalid_event(case: dict[str, Any]) -> None:
    with pytest.raises(EnvelopeError) as caught:
        Event.from_dict(case["event"])

    assert caught.value.violations


@pytest.mark.parametrize("case", _cases("valid-batches.json"))
def test_from_dict_accepts_valid_batch_events(
    case: dict[str, Any],
) -> None:
    events = [Event.from_dict(document) for document in case["batch"]]

    assert [event.id for event in events] == [d["id"] for d in case["batch"]]


@pytest.mark.parametrize("case", _cases("invalid-batches.json"))
def test_from_dict_rejects_invalid_batch_event(
    case: dict[str, Any],
) -> None:
    rejected = 0
    for document in case["batch"]:
        try:
            Event.from_dict(document)
        except EnvelopeError:
            rejected += 1

    assert rejected >= 1


@pytest.mark.parametrize("case", _cases("valid-events.json"))
async def test_post_structured_accepts_valid_event(
    case: dict[str, Any], open_client: httpx.AsyncClient, event_log: ReadableLog
) -> None:
    response = await open_client.post("/v1/events", **structured(case["event"]))

    assert response.status_code == 202, response.text
    assert response.json()["events"][0]["id"] == case["event"]["id"]
    assert response.json()["events"][0]["duplicate"] is False
    stored = await read_all(event_log)
    assert len(stored) == 1
    assert stored[0].event.to_dict() == _without_nulls(case["event"])


@pytest.mark.parametrize("case", _cases("invalid-events.json"))
async def test_post_structured_rejects_invalid_event(
    case: dict[str, Any], open_client: httpx.AsyncClient, event_log: ReadableLog
) -> None:
    response = await open_client.post("/v1/events", **structured(case["event"]))

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422
    assert problem["errors"]
    assert all("index" not in entry for entry in problem["errors"])
    assert await read_all(event_log) == []


@pytest.mark.parametrize("case", _cases("valid-batches.json"))
async def test_post_batch_accepts_valid_batch(
    case: dict[str, Any], open_client: httpx.AsyncClient, event_log: ReadableLog
) -> None:
    response = await open_client.post("/v1/events", **batched(case["batch"]))

    assert response.status_code == 202, response.text
    results = response.json()["events"]
    assert [r["id"] for r in results] == [d["id"] for d in case["batch"]]
    unique_ids = {document["id"] for document in case["batch"]}
    assert len(await read_all(event_log)) == len(unique_ids)
    assert sum(not r["duplicate"] for r in results) == len(unique_ids)


@pytest.mark.parametrize("case", _cases("invalid-batches.json"))
async def test_post_batch_rejects_invalid_batch_whole(
    case: dict[str, Any], open_client: httpx.AsyncClient, event_log: ReadableLog
) -> None:
    response = await open_client.post("/v1/events", **batched(case["batch"]))

    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["errors"]
    assert all(isinstance(entry["index"], int) for entry in problem["errors"])
    assert await read_all(event_log) == []
