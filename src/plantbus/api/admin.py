"""`/v1/admin`: list, show, redrive and discard dead letters; read the audit log."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from plantbus.admin import AdminService, default_actor
from plantbus.api.problems import HttpProblem
from plantbus.errors import PlantbusError
from plantbus.state.dead_letters import DeadLetter
from plantbus.state.store import DeadLetterFilter

_NOT_FOUND = "urn:plantbus:problem:dead-letter-not-found"
_INVALID_ACTION = "urn:plantbus:problem:invalid-admin-action"


class LetterFilter(BaseModel):
    """Selection of open dead letters for a redrive or discard."""

    model_config = ConfigDict(extra="forbid")

    type: str | None = None
    sink: str | None = None
    pipeline: str | None = None
    error: str | None = Field(default=None, description="Text the error contains.")
    since: datetime | None = None
    until: datetime | None = None


class RedriveRequest(BaseModel):
    """Body of a redrive request: dead letter ids or a filter, and the actor."""

    model_config = ConfigDict(extra="forbid")

    ids: list[int] | None = None
    filter: LetterFilter | None = None
    actor: str | None = None


class DiscardRequest(RedriveRequest):
    """Body of a discard request: as for a redrive, plus the reason."""

    reason: str = Field(min_length=1)


def describe_dead_letter(letter: DeadLetter, *, payload: bool) -> dict[str, Any]:
    """Return a dead letter as JSON-ready data, with or without its payload."""
    described: dict[str, Any] = {
        "id": letter.id,
        "status": letter.details.get("status"),
        "created_at": letter.created_at,
        "stage": letter.stage,
        "error": letter.error,
        "source": letter.source,
        "event_id": letter.event_id,
        "event_type": letter.event_type,
        "pipeline": letter.pipeline,
        "sink": letter.sink,
        "offset": letter.offset,
        "content_type": letter.content_type,
        "details": {k: v for k, v in letter.details.items() if k != "status"},
    }
    if payload:
        described["headers"] = letter.headers
        described["attempts"] = [
            {"at": attempt.at, "error": attempt.error} for attempt in letter.attempts
        ]
        try:
            described["payload"] = letter.payload.decode("utf-8")
        except UnicodeDecodeError:
            described["payload_base64"] = base64.b64encode(letter.payload).decode()
    return described


def admin_router(service: AdminService) -> APIRouter:
    """Build the router of the operator endpoints under `/admin`."""
    # TODO: these endpoints need authentication and authorisation before the
    # API listens beyond a trusted interface: anyone who reaches the port can
    # redrive or discard dead letters and name any actor.
    router = APIRouter(prefix="/admin", tags=["admin"])

    @router.get("/dead-letters", summary="List dead letters")
    async def list_dead_letters(
        type: str | None = None,
        sink: str | None = None,
        pipeline: str | None = None,
        error: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        status: Annotated[
            str, Query(pattern="^(open|redriving|redriven|discarded|parked|all)$")
        ] = "open",
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> dict[str, Any]:
        where = _filter(
            LetterFilter(
                type=type,
                sink=sink,
                pipeline=pipeline,
                error=error,
                since=since,
                until=until,
            ),
            ids=None,
        )
        where.status = None if status == "all" else status
        letters = await service.dead_letters(where, limit=limit)
        return {
            "dead_letters": [describe_dead_letter(x, payload=False) for x in letters]
        }

    @router.get("/dead-letters/{letter_id}", summary="Show one dead letter")
    async def show_dead_letter(letter_id: int) -> dict[str, Any]:
        letter = await service.dead_letter(letter_id)
        if letter is None:
            raise HttpProblem(
                404,
                _NOT_FOUND,
                "Dead Letter Not Found",
                f"There is no dead letter {letter_id!r}. GET "
                f"/v1/admin/dead-letters?status=all lists them all.",
            )
        return describe_dead_letter(letter, payload=True)

    @router.post("/dead-letters/redrive", summary="Redrive dead letters")
    async def redrive(body: RedriveRequest) -> dict[str, Any]:
        where = _filter(body.filter, ids=body.ids)
        try:
            result = await service.redrive(where, actor=body.actor or default_actor())
        except PlantbusError as exc:
            raise _invalid(exc) from exc
        return result.to_dict()

    @router.post("/dead-letters/discard", summary="Discard dead letters")
    async def discard(body: DiscardRequest) -> dict[str, Any]:
        where = _filter(body.filter, ids=body.ids)
        try:
            result = await service.discard(
                where, actor=body.actor or default_actor(), reason=body.reason
            )
        except PlantbusError as exc:
            raise _invalid(exc) from exc
        return result.to_dict()

    @router.get("/audit", summary="Read the audit log, oldest first")
    async def audit(
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> dict[str, Any]:
        records = await service.audit_log(limit=limit)
        return {
            "audit": [
                {
                    "at": record.at,
                    "actor": record.actor,
                    "action": record.action,
                    "target": record.target,
                    "details": record.details,
                }
                for record in records
            ]
        }

    return router


def _filter(
    selection: LetterFilter | None, *, ids: list[int] | None
) -> DeadLetterFilter:
    selection = selection or LetterFilter()
    return DeadLetterFilter(
        ids=ids,
        event_type=selection.type,
        pipeline=selection.pipeline,
        sink=selection.sink,
        error_contains=selection.error,
        since=_seconds(selection.since),
        until=_seconds(selection.until),
    )


def _seconds(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    if moment.utcoffset() is None:
        raise HttpProblem(
            422,
            _INVALID_ACTION,
            "Invalid Admin Action",
            f"Time {moment.isoformat()!r} has no timezone: add one, such as "
            f"'2026-03-01T06:00:00Z'.",
        )
    return moment.timestamp()


def _invalid(exc: PlantbusError) -> HttpProblem:
    return HttpProblem(422, _INVALID_ACTION, "Invalid Admin Action", str(exc))
