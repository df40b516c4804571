"""A warehouse management system (WMS): staging tasks and receiving tasks.

A staging task requests that the warehouse bring material for a work order to a
line-side location. A receiving task lists the ASN lines that the dock
should expect and check in.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AwareDatetime, Field

from plantbus.sim.refservers.base import RefServer
from plantbus.sim.refservers.models import Body, Code, Quantity, Stored
from plantbus.sim.refservers.records import Collection, asn_key


class StagingTaskIn(Body):
    """A request to stage material for a work order."""

    work_order_id: Code
    item: Code
    quantity: Quantity
    lot: Code | None = None
    from_location: Code
    to_location: Code
    due_at: AwareDatetime
    priority: Annotated[int, Field(ge=1, le=9)] = 5


class StagingTask(StagingTaskIn, Stored):
    """A stored staging task."""


class ReceivingLine(Body):
    """One line of an expected delivery."""

    line_number: Annotated[int, Field(ge=1)]
    item: Code
    quantity: Quantity
    lot: Code | None = None


class ReceivingTaskIn(Body):
    """A request to receive the goods of one ASN at a dock."""

    asn_number: Code
    supplier_id: Code
    dock: Code
    expected_at: AwareDatetime
    lines: Annotated[list[ReceivingLine], Field(min_length=1, max_length=500)]


class ReceivingTask(ReceivingTaskIn, Stored):
    """A stored receiving task."""


def build(**options: Any) -> RefServer:
    """Build the WMS reference server, passing `options` to RefServer."""
    server = RefServer("wms", "Reference WMS", api_prefix="/api/v1", **options)
    server.add_collection(
        "/staging-tasks",
        Collection("staging-task", "ST"),
        StagingTaskIn,
        StagingTask,
        tag="staging",
        filters=("work_order_id", "status"),
    )
    server.add_collection(
        "/receiving-tasks",
        Collection("receiving-task", "RT", status="expected", business_key=asn_key),
        ReceivingTaskIn,
        ReceivingTask,
        tag="receiving",
        filters=("asn_number", "supplier_id", "status"),
    )
    return server.ready()
