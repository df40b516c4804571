"""RFC 9457 problem documents: the body of every error response of the API."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from plantbus.errors import Violation

logger = logging.getLogger("plantbus.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"

# Problem types are URNs because plantbus has no web site that could document
# them. The `title` of a type stays the same for every occurrence.
INVALID_EVENTS = "urn:plantbus:problem:invalid-events"
MALFORMED_JSON = "urn:plantbus:problem:malformed-json"
MALFORMED_BODY = "urn:plantbus:problem:malformed-body"
UNSUPPORTED_MEDIA_TYPE = "urn:plantbus:problem:unsupported-media-type"
BODY_TOO_LARGE = "urn:plantbus:problem:body-too-large"
UNKNOWN_EVENT_TYPE = "urn:plantbus:problem:unknown-event-type"
BACKBONE_UNAVAILABLE = "urn:plantbus:problem:backbone-unavailable"
BACKLOG_FULL = "urn:plantbus:problem:backlog-full"


class HttpProblem(Exception):
    """An error that the API returns to the client as a problem document."""

    def __init__(
        self,
        status: int,
        type: str,
        title: str,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        errors_omitted: int = 0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.errors = errors
        self.errors_omitted = errors_omitted
        self.headers = dict(headers or {})


def problem_response(problem: HttpProblem) -> Response:
    """Render a problem document with a fresh `instance` id and log it."""
    instance = f"urn:uuid:{uuid.uuid4()}"
    body: dict[str, Any] = {
        "type": problem.type,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": instance,
    }
    if problem.errors is not None:
        body["errors"] = problem.errors
    if problem.errors_omitted:
        body["errors_omitted"] = problem.errors_omitted

    # The instance id is in the response and in the log line, so support staff
    # can find the log line from what a client reports.
    logger.info(
        "Request rejected with %s %s (%s): %s",
        problem.status,
        problem.title,
        instance,
        problem.detail,
    )
    return Response(
        orjson.dumps(body, default=_json_fallback),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=problem.headers,
    )


def violation_entries(
    event_id: str | None, violations: list[Violation], index: int | None = None
) -> list[dict[str, Any]]:
    """List one `errors` entry per violation of an event, with its batch index."""
    entries = []
    for violation in violations:
        entry: dict[str, Any] = {} if index is None else {"index": index}
        entry["event_id"] = event_id
        entry["field"] = violation.path
        entry["value"] = shorten(violation.value)
        entry["rule"] = violation.rule
        entry["message"] = violation.describe()
        entries.append(entry)
    return entries


def shorten(value: Any, limit: int = 200) -> Any:
    """Return a value for an error entry, cut to `limit` characters when long."""
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + f"… ({len(value)} characters)"
    if isinstance(value, (dict, list)) and len(repr(value)) > limit:
        return repr(value)[:limit] + f"… ({type(value).__name__} of {len(value)})"
    return value


def _json_fallback(value: Any) -> str:
    # Violations may carry values that JSON cannot hold, such as bytes from
    # binary-mode data; the problem document shows their text form instead.
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return repr(value)


async def handle_http_problem(request: Request, exc: Exception) -> Response:
    """Turn an HttpProblem raised by a route into its problem document."""
    assert isinstance(exc, HttpProblem)
    return problem_response(exc)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Render the framework's own errors (404, 405) as problem documents."""
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404:
        detail = (
            f"No resource at {request.url.path!r}. The API serves /v1/events, "
            f"/v1/health and /v1/catalogue."
        )
    if exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path!r}."
    return problem_response(
        HttpProblem(
            exc.status_code,
            "about:blank",
            _reason(exc.status_code),
            detail,
            headers=exc.headers,
        )
    )


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
