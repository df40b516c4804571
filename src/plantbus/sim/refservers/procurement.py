"""A procurement system as a service: purchase requisitions.

A purchase requisition requests that the buyers order an item by a date. It starts
in status `submitted` and waits for approval.
"""

from __future__ import annotations

import datetime
from typing import Annotated, Any

from pydantic import Field

from plantbus.sim.refservers.base import RefServer
from plantbus.sim.refservers.models import (
    Body,
    Code,
    PositiveDecimalString,
    Quantity,
    Stored,
)
from plantbus.sim.refservers.records import Collection


class Money(Body):
    """An amount in an ISO 4217 currency."""

    amount: PositiveDecimalString
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


class RequisitionIn(Body):
    """A request to buy an item."""

    requester: Code
    item: Code
    description: Annotated[str, Field(max_length=500)] | None = None
    quantity: Quantity
    need_by: datetime.date
    plant: Code
    cost_center: Code | None = None
    estimated_unit_price: Money | None = None


class Requisition(RequisitionIn, Stored):
    """A stored purchase requisition."""


def build(**options: Any) -> RefServer:
    """Build the procurement reference server, passing `options` to RefServer."""
    server = RefServer(
        "procurement", "Reference procurement", api_prefix="/api", **options
    )
    server.add_collection(
        "/requisitions",
        Collection("requisition", "PR", status="submitted"),
        RequisitionIn,
        Requisition,
        tag="requisitions",
        filters=("item", "plant", "status"),
    )
    return server.ready()
