"""A quality management system (QMS) as a service: nonconformance records.

A nonconformance records a defect found on a lot: what, how severe, where and
when it was found.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Field

from plantbus.sim.refservers.base import RefServer
from plantbus.sim.refservers.models import Body, Code, Quantity, Stored
from plantbus.sim.refservers.records import Collection


class NonconformanceIn(Body):
    """A defect found on an item or a lot."""

    item: Code
    lot: Code | None = None
    quantity: Quantity
    # Defect catalogue code: 2 to 4 capital letters, a dash and 2 to 4 digits.
    defect_code: Annotated[str, Field(pattern=r"^[A-Z]{2,4}-[0-9]{2,4}$")]
    severity: Literal["minor", "major", "critical"]
    detected_at: AwareDatetime
    plant: Code
    description: Annotated[str, Field(min_length=1, max_length=2000)]
    source_event_id: Code | None = None


class Nonconformance(NonconformanceIn, Stored):
    """A stored nonconformance record."""


def build(**options: Any) -> RefServer:
    """Build the QMS reference server, passing `options` to RefServer."""
    server = RefServer("qms", "Reference QMS", api_prefix="/api/v2", **options)
    server.add_collection(
        "/nonconformances",
        Collection("nonconformance", "NC"),
        NonconformanceIn,
        Nonconformance,
        tag="nonconformances",
        filters=("item", "lot", "severity", "status"),
    )
    return server.ready()
