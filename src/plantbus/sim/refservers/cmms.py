"""A computerized maintenance management system (CMMS): work orders.

A maintenance work order requests that technicians repair or inspect an asset. The
`external_ref` of a work order is unique, so a second work order for the same
machine-down event gets 409 with the Location of the first.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Field

from plantbus.sim.refservers.base import RefServer
from plantbus.sim.refservers.models import Body, Code, Stored
from plantbus.sim.refservers.records import Collection


class WorkOrderIn(Body):
    """A request for maintenance on one asset."""

    asset_id: Code
    title: Annotated[str, Field(min_length=3, max_length=120)]
    description: Annotated[str, Field(max_length=4000)] | None = None
    type: Literal["corrective", "preventive", "inspection"]
    priority: Literal["low", "medium", "high", "emergency"]
    reported_at: AwareDatetime
    # The caller's reference, such as the id of the event that caused it.
    external_ref: Code | None = None


class WorkOrder(WorkOrderIn, Stored):
    """A stored maintenance work order."""


def _external_ref(payload: dict[str, Any]) -> str | None:
    reference = payload.get("external_ref")
    return str(reference) if reference is not None else None


def build(**options: Any) -> RefServer:
    """Build the CMMS reference server, passing `options` to RefServer."""
    server = RefServer("cmms", "Reference CMMS", api_prefix="/api", **options)
    server.add_collection(
        "/work-orders",
        Collection("work-order", "MWO", status="requested", business_key=_external_ref),
        WorkOrderIn,
        WorkOrder,
        tag="work orders",
        filters=("asset_id", "status", "external_ref"),
    )
    return server.ready()
