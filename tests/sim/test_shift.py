"""The demo's simulated shift: its events end before the moment it is built."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from plantbus.demo import _simulate_past_shift
from plantbus.sim.shift import Component, Operation, OrderPlan


def _plans(count: int) -> list[OrderPlan]:
    return [
        OrderPlan(
            number=f"MO-{n:05d}",
            plant="P1",
            item="FG-100",
            quantity=Decimal(4),
            unit="u",
            components=(Component("C-200", Decimal(2), "u", None),),
            operations=(Operation("Assemble", "WC-1"), Operation("Test", "WC-2")),
        )
        for n in range(count)
    ]


def test_shift_of_many_orders_ends_before_now() -> None:
    # 60 orders take well over eight hours of simulated time.
    shift = _simulate_past_shift(_plans(60), seed=7)

    assert shift.latest is not None
    assert shift.latest < datetime.now(UTC)
    assert len(shift.http_events) > 60


def test_shift_keeps_its_events_when_moved_earlier() -> None:
    moved = _simulate_past_shift(_plans(60), seed=7)
    again = _simulate_past_shift(_plans(60), seed=7)

    assert [e.type for e in moved.http_events] == [e.type for e in again.http_events]
    assert moved.produced == again.produced
