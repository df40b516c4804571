"""The plantbus HTTP API, versioned under `/v1`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from plantbus.api.backpressure import BacklogGuard
from plantbus.api.catalogue import catalogue_router
from plantbus.api.ingest import events_router
from plantbus.api.problems import (
    HttpProblem,
    handle_http_exception,
    handle_http_problem,
    problem_response,
)
from plantbus.connectors.base import Ingest
from plantbus.events.catalogue import Catalogue

if TYPE_CHECKING:
    from plantbus.admin import AdminService

logger = logging.getLogger("plantbus.api")

# 1 MiB fits about 3,000 work order events of some 350 bytes each (an estimate).
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
_HEALTHY = orjson.dumps({"status": "ok"})


def create_app(
    ingest: Ingest,
    *,
    catalogue: Catalogue,
    allow_unknown_types: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    admin: AdminService | None = None,
    backlog_guard: BacklogGuard | None = None,
) -> FastAPI:
    """Build the API application that hands incoming events to `ingest`.

    With `allow_unknown_types`, events whose type is not in the catalogue are
    accepted with only the envelope checked; otherwise they get a 422. With
    `admin`, the operator endpoints under `/v1/admin` are served too.
    """
    if max_body_bytes < 1:
        raise ValueError(
            f"max_body_bytes is {max_body_bytes!r}: expected a positive number of "
            f"bytes."
        )

    # TODO: no authentication yet. Every client that reaches the port can
    # append events, so bind to a trusted interface until API keys exist.
    app = FastAPI(
        title="plantbus",
        summary="Event-driven integration hub for manufacturers.",
        version="1",
    )
    app.add_exception_handler(HttpProblem, handle_http_problem)
    app.add_exception_handler(StarletteHTTPException, handle_http_exception)
    app.add_exception_handler(Exception, _handle_unexpected)

    v1 = APIRouter(prefix="/v1")
    v1.include_router(
        events_router(
            ingest,
            catalogue,
            allow_unknown_types=allow_unknown_types,
            max_body_bytes=max_body_bytes,
            backlog_guard=backlog_guard,
        )
    )
    v1.include_router(catalogue_router(catalogue))
    if admin is not None:
        from plantbus.api.admin import admin_router

        v1.include_router(admin_router(admin))
    v1.add_api_route("/health", _health, methods=["GET"], summary="Liveness")
    app.include_router(v1)
    # Prometheus scrapes the conventional path, outside the versioned API.
    app.add_api_route(
        "/metrics", _metrics, methods=["GET"], summary="Prometheus metrics"
    )
    return app


async def _metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def _health() -> Response:
    return Response(_HEALTHY, media_type="application/json")


async def _handle_unexpected(request: Request, exc: Exception) -> Response:
    # Starlette logs the traceback of an unhandled error after this handler
    # ran, so the handler only builds the response.
    return problem_response(
        HttpProblem(
            500,
            "about:blank",
            "Internal Server Error",
            f"{request.method} {request.url.path} failed with an internal error "
            f"that the server log records. Quote the instance id when you report "
            f"it.",
        )
    )
