"""RFC 9457 problem documents, the body of each error response of a reference server."""

from __future__ import annotations

from typing import Any

from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

PROBLEM_MEDIA_TYPE = "application/problem+json"


class Problem(Exception):
    """An error that the server returns as an RFC 9457 problem document."""

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions


def problem_response(problem: Problem) -> JSONResponse:
    """Render a problem document."""
    body = {
        "type": f"urn:plantbus:refserver:problem:{problem.kind}",
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        **problem.extensions,
    }
    return JSONResponse(
        jsonable_encoder(body),
        status_code=problem.status,
        headers=problem.headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


def record_not_found(noun: str, record_id: str) -> Problem:
    """Build the 404 problem for a record id that a collection does not contain."""
    return Problem(
        404, "not-found", "Record not found", f"No {noun} has the id {record_id!r}."
    )


def validation_problem(exc: RequestValidationError) -> Problem:
    """Turn pydantic's errors into a problem document naming field, value and rule."""
    errors = []
    for error in exc.errors():
        location = [str(part) for part in error["loc"]]
        # The first element is the location: body, query, header or path.
        where, path = (location[0], location[1:]) if location else ("body", [])
        field = ".".join(path) or where
        missing = error["type"] == "missing"
        errors.append(
            {
                "field": field,
                "in": where,
                "pointer": "#/" + "/".join(path),
                "value": None if missing else error.get("input"),
                "rule": error["msg"],
            }
        )
    clauses = "; ".join(
        f"field `{e['field']}` is missing"
        if e["value"] is None and "required" in e["rule"].lower()
        else f"field `{e['field']}` is {e['value']!r}: {e['rule']}"
        for e in errors
    )
    return Problem(
        422,
        "validation",
        "Request validation failed",
        f"The request is invalid: {clauses}.",
        errors=errors,
    )
