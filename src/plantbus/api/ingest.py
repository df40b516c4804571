"""`POST /v1/events`: take CloudEvents over HTTP and append them to the log.

The route checks every event itself (envelope rules, then the catalogue
schema) before it calls `ingest`, so that a rejected batch lists the errors of
all its events in one response. `ingest` may check again. The route returns
202 only after `ingest` returned, because that is when the events are on
stable storage.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from plantbus.api.backpressure import BacklogGuard
from plantbus.api.binding import BATCH, STRUCTURED, DecodedRequest, decode_request
from plantbus.api.problems import (
    BACKBONE_UNAVAILABLE,
    BODY_TOO_LARGE,
    INVALID_EVENTS,
    MALFORMED_BODY,
    PROBLEM_MEDIA_TYPE,
    HttpProblem,
    violation_entries,
)
from plantbus.backbone.log import Appended
from plantbus.connectors.base import Ingest
from plantbus.errors import (
    BackboneError,
    BatchRejected,
    EnvelopeError,
    EventError,
    SchemaError,
    Violation,
)
from plantbus.events.catalogue import Catalogue
from plantbus.events.envelope import Event

logger = logging.getLogger("plantbus.api")

# Seconds a client should wait before it sends again after a 503.
RETRY_AFTER_SECONDS = 1


@dataclass(slots=True)
class CheckedRequest:
    """The checked events of a request, or the errors of those that failed a check."""

    events: list[Event]
    errors: list[dict[str, Any]]
    invalid_count: int


def check_events(
    decoded: DecodedRequest, catalogue: Catalogue, *, allow_unknown_types: bool
) -> CheckedRequest:
    """Check each decoded document against the envelope rules and the catalogue."""
    checked = CheckedRequest(events=[], errors=[], invalid_count=0)
    if decoded.violations and not decoded.documents:
        checked.errors = violation_entries(None, decoded.violations)
        checked.invalid_count = 1
        return checked

    indexes: list[int] = []
    for index, document in enumerate(decoded.documents):
        violations = list(decoded.violations) if index == 0 else []
        event = _check_document(document, catalogue, allow_unknown_types, violations)
        if violations:
            event_id = document.get("id") if isinstance(document, dict) else None
            checked.errors.extend(
                violation_entries(
                    event_id if isinstance(event_id, str) else None,
                    violations,
                    index if decoded.batch else None,
                )
            )
            checked.invalid_count += 1
            continue
        assert event is not None
        if decoded.binary_data is not None:
            event.data_binary = decoded.binary_data
        checked.events.append(event)
        indexes.append(index)

    # With valid envelopes, the data is checked once, by `ingest`. A request
    # that is rejected anyway gets the data errors of every event listed too.
    if checked.invalid_count:
        for index, event in zip(indexes, checked.events, strict=True):
            try:
                catalogue.validate(event, allow_unknown=allow_unknown_types)
            except SchemaError as exc:
                checked.errors.extend(
                    violation_entries(
                        event.id, exc.violations, index if decoded.batch else None
                    )
                )
                checked.invalid_count += 1
        checked.errors.sort(key=lambda entry: entry.get("index", 0))
    return checked


def _check_document(
    document: Any,
    catalogue: Catalogue,
    allow_unknown_types: bool,
    violations: list[Violation],
) -> Event | None:
    """Build the event, adding every broken rule to `violations`."""
    try:
        event = Event.from_dict(document)
    except EnvelopeError as exc:
        violations.extend(exc.violations)
        event = None

    # Without a valid envelope there is no event, but the data can still be
    # checked, so the sender learns about every field in one response.
    probe = None
    if event is None and isinstance(document, dict):
        event_type = document.get("type")
        if isinstance(event_type, str) and event_type in catalogue:
            probe = Event(id="", source="", type=event_type, data=document.get("data"))
    if probe is not None:
        try:
            catalogue.validate(probe, allow_unknown=allow_unknown_types)
        except SchemaError as exc:
            violations.extend(exc.violations)
    return event


def accepted_response(appended: Sequence[Appended]) -> Response:
    """Render the 202 response with each event's id, offset, partition and duplicate."""
    body = {
        "events": [
            {
                "id": result.event_id,
                "offset": result.offset,
                "partition": result.partition,
                "duplicate": result.duplicate,
            }
            for result in appended
        ]
    }
    return Response(orjson.dumps(body), status_code=202, media_type="application/json")


# Maximum number of error entries in one 422 response.
MAX_ERRORS = 100


def invalid_events_problem(
    errors: list[dict[str, Any]], invalid_count: int, size: int, batch: bool
) -> HttpProblem:
    """Build the 422 problem that lists the invalid fields of the request.

    At most MAX_ERRORS entries are listed, so that a hostile request cannot
    make the response many times larger than itself; `errors_omitted` counts the
    rest.
    """
    if batch:
        detail = (
            f"{invalid_count} of {size} events in the batch are invalid, so none "
            f"was appended. Fix the fields listed in `errors` and send the batch "
            f"again."
        )
    else:
        detail = (
            f"The event is invalid in {len(errors)} field(s) and was not appended. "
            f"Fix the fields listed in `errors` and send it again."
        )
    extra: dict[str, Any] = {"errors": errors[:MAX_ERRORS]}
    if len(errors) > MAX_ERRORS:
        extra["errors_omitted"] = len(errors) - MAX_ERRORS
    return HttpProblem(422, INVALID_EVENTS, "Invalid Events", detail, **extra)


async def read_body(request: Request, max_body_bytes: int) -> bytes:
    """Read the request body, stopping with 413 as soon as it passes the limit."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_body_bytes:
        raise _too_large(int(declared), max_body_bytes)

    chunks = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise _too_large(size, max_body_bytes)
            chunks.append(chunk)
    except ClientDisconnect as exc:
        # The client has gone, so no response is read, and nothing was appended.
        logger.info("Client disconnected after %d bytes of the request body", size)
        raise HttpProblem(
            400,
            MALFORMED_BODY,
            "Incomplete Body",
            f"The client closed the connection after {size} bytes of the body.",
        ) from exc
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> HttpProblem:
    return HttpProblem(
        413,
        BODY_TOO_LARGE,
        "Content Too Large",
        f"The request body has at least {size} bytes, more than the limit of "
        f"{limit} bytes. Split the batch into smaller ones.",
        headers={"Connection": "close"},
    )


def _ingest_errors(
    exc: EventError | BatchRejected, events: Sequence[Event], batch: bool
) -> tuple[list[dict[str, Any]], int]:
    """List the errors that `ingest` raised in the shape of the 422 document."""
    if isinstance(exc, BatchRejected):
        pairs = exc.errors
    else:
        index = next(
            (i for i, event in enumerate(events) if event.id == exc.event_id), 0
        )
        pairs = [(index, exc)]
    errors = []
    for index, error in pairs:
        errors.extend(
            violation_entries(
                error.event_id, error.violations, index if batch else None
            )
        )
    return errors, len(pairs)


_REQUEST_BODY = {
    "required": True,
    "description": (
        "CloudEvents in structured, batched or binary mode (CloudEvents 1.0 "
        "HTTP protocol binding)."
    ),
    "content": {
        STRUCTURED: {"schema": {"type": "object"}},
        BATCH: {"schema": {"type": "array", "items": {"type": "object"}}},
        "*/*": {
            "schema": {},
            "description": "Binary mode: the data, with ce-* headers.",
        },
    },
}
_PROBLEM = {"content": {PROBLEM_MEDIA_TYPE: {"schema": {"type": "object"}}}}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"description": "Every event is appended durably."},
    400: {"description": "The body is not valid JSON.", **_PROBLEM},
    413: {"description": "The body is larger than the limit.", **_PROBLEM},
    415: {"description": "The media type carries no CloudEvents.", **_PROBLEM},
    422: {"description": "Invalid events; `errors` lists every field.", **_PROBLEM},
    503: {"description": "The event log is unavailable; retry.", **_PROBLEM},
}


def events_router(
    ingest: Ingest,
    catalogue: Catalogue,
    *,
    allow_unknown_types: bool,
    max_body_bytes: int,
    backlog_guard: BacklogGuard | None = None,
) -> APIRouter:
    """Build the router that serves `POST /events`."""
    router = APIRouter()

    @router.post(
        "/events",
        status_code=202,
        responses=_RESPONSES,
        openapi_extra={"requestBody": _REQUEST_BODY},
        summary="Append CloudEvents to the event log",
    )
    async def post_events(request: Request) -> Response:
        if backlog_guard is not None:
            await backlog_guard.check()
        # NOTE: Content-Encoding (gzip) is not decoded, so a compressed body
        # gets a 400 for malformed JSON.
        body = await read_body(request, max_body_bytes)
        decoded = decode_request(
            request.headers.get("content-type"), request.headers.items(), body
        )
        checked = check_events(
            decoded, catalogue, allow_unknown_types=allow_unknown_types
        )
        if checked.errors:
            raise invalid_events_problem(
                checked.errors,
                checked.invalid_count,
                len(decoded.documents),
                decoded.batch,
            )
        if not checked.events:
            return accepted_response([])

        try:
            appended = await ingest(checked.events)
        except (BatchRejected, EventError) as exc:
            errors, invalid_count = _ingest_errors(exc, checked.events, decoded.batch)
            raise invalid_events_problem(
                errors, invalid_count, len(checked.events), decoded.batch
            ) from exc
        except BackboneError as exc:
            logger.error("Appending %d event(s) failed: %s", len(checked.events), exc)
            raise HttpProblem(
                503,
                BACKBONE_UNAVAILABLE,
                "Service Unavailable",
                f"The event log could not append the events ({exc}). Nothing "
                f"was acknowledged; send the request again.",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            ) from exc
        return accepted_response(appended)

    return router
