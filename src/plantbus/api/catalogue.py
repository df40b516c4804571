"""`GET /v1/catalogue`: the event types that plantbus accepts, with their schemas."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter
from fastapi.responses import Response

from plantbus.api.problems import UNKNOWN_EVENT_TYPE, HttpProblem
from plantbus.events.catalogue import Catalogue, EventType


def describe_event_type(event_type: EventType) -> dict[str, Any]:
    """Return the catalogue entry of an event type without its schema."""
    return {
        "name": event_type.name,
        "version": event_type.version,
        "domain": event_type.domain,
        "owner": event_type.owner,
        "status": event_type.status,
        "description": event_type.description,
        "partition_field": event_type.partition_field,
        "sla": {
            "name": event_type.sla.name,
            "target_seconds": event_type.sla.target_seconds,
            "description": event_type.sla.description,
        },
        "schema_id": event_type.schema_id,
    }


def catalogue_router(catalogue: Catalogue) -> APIRouter:
    """Build the router that serves the catalogue and the JSON Schema of each type."""
    router = APIRouter()
    # The catalogue does not change while the process runs, so both responses
    # are rendered once.
    listing = orjson.dumps({"event_types": [describe_event_type(t) for t in catalogue]})
    schemas = {t.name: orjson.dumps(t.schema) for t in catalogue}

    @router.get("/catalogue", summary="List the event types of the catalogue")
    async def list_event_types() -> Response:
        return Response(listing, media_type="application/json")

    @router.get(
        "/catalogue/{event_type}",
        summary="Return the JSON Schema of an event type",
        responses={404: {"description": "The catalogue has no such event type."}},
    )
    async def get_schema(event_type: str) -> Response:
        schema = schemas.get(event_type)
        if schema is None:
            raise HttpProblem(
                404,
                UNKNOWN_EVENT_TYPE,
                "Unknown Event Type",
                f"The catalogue has no event type {event_type!r}. GET /v1/catalogue "
                f"lists the known types.",
            )
        return Response(schema, media_type="application/schema+json")

    return router
