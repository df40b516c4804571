"""Simulate a shift of shop-floor activity for released production orders.

The simulator produces the events that an MES and the machines of two plants
would send: work orders started, progressed and completed, material consumed
with lots, scrap, and machines going down and up. It is deterministic for a
seed, and it keeps the totals it sent so that a test can compare them with
what the ERP booked.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from plantbus.events.envelope import Event, format_time, parse_time

NAMESPACE = uuid.UUID("5d1c2a53-52b1-4c1e-9a53-6f0d0a4c7b10")


@dataclass(frozen=True)
class Component:
    """One BOM input of an order: item, quantity per produced unit, unit, lot."""

    item: str
    per_unit: Decimal
    unit: str
    lot: str | None


@dataclass(frozen=True)
class Operation:
    """One routing step of an order."""

    name: str
    work_center: str


@dataclass(frozen=True)
class OrderPlan:
    """A released production order, with what the shop floor needs to work on it."""

    number: str
    plant: str
    item: str
    quantity: Decimal
    unit: str
    components: tuple[Component, ...]
    operations: tuple[Operation, ...]


@dataclass
class Completion:
    """A work order completion; the B2MML channel writes it as a file."""

    order: OrderPlan
    produced: Decimal
    scrap: Decimal
    lot: str
    started_at: datetime
    completed_at: datetime
    consumed: list[tuple[Component, Decimal]]


@dataclass
class Shift:
    """The events of one simulated shift, in the order they are sent."""

    http_events: list[Event] = field(default_factory=list)
    b2mml_completions: list[Completion] = field(default_factory=list)
    # Totals that the valid input requests the ERP to book.
    produced: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    consumed: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    orders_completed: list[str] = field(default_factory=list)

    @property
    def latest(self) -> datetime | None:
        """Return the time of the shift's last event, None for an empty shift."""
        times = [parse_time(event.time) for event in self.http_events if event.time]
        times += [completion.completed_at for completion in self.b2mml_completions]
        return max(times, default=None)

    @property
    def event_count(self) -> int:
        """Return the number of events sent, counting those inside B2MML files."""
        per_file = sum(2 + len(c.consumed) for c in self.b2mml_completions)
        return len(self.http_events) + per_file


def _event_id(*parts: object) -> str:
    return str(uuid.uuid5(NAMESPACE, "/".join(str(p) for p in parts)))


def _quantity(value: Decimal, unit: str) -> dict[str, str]:
    return {"value": f"{value.normalize():f}", "unit": unit}


def simulate_shift(
    orders: list[OrderPlan],
    *,
    start: datetime,
    seed: int = 7,
    b2mml_share: float = 0.25,
    progress_reports: int = 3,
    breakdowns_per_work_center: int = 2,
) -> Shift:
    """Build the events of one shift for the given orders.

    Every order is started, progressed on each operation, consumes its
    components and completes with a little scrap. A share of the orders
    report their completion through a B2MML ProductionPerformance file
    instead of HTTP, as an MES export would.
    """
    rng = random.Random(seed)
    shift = Shift()
    clock = start

    for order in orders:
        source = f"/plants/{order.plant}/mes"
        correlation = order.number
        started_at = clock + timedelta(minutes=rng.randint(0, 20))

        def make(
            event_type: str,
            data: dict[str, Any],
            at: datetime,
            *name: object,
            order: OrderPlan = order,
            source: str = source,
            correlation: str = correlation,
        ) -> Event:
            return Event(
                id=_event_id(order.number, event_type, *name),
                source=source,
                type=event_type,
                data=data,
                subject=order.number,
                time=format_time(at),
                correlationid=correlation,
                plant=order.plant,
                partitionkey=order.number,
            )

        shift.http_events.append(
            make(
                "production.workorder.started.v1",
                {
                    "work_order_id": order.number,
                    "started_at": format_time(started_at),
                    "item": order.item,
                    "operation": order.operations[0].name,
                    "work_center": order.operations[0].work_center,
                },
                started_at,
                "start",
            )
        )

        # Good quantity is reported per operation in a few progress reports; the
        # last operation's scrap is what the completion reports as scrap.
        scrap = Decimal(rng.choice([0, 0, 0, 1, 2]))
        produced = order.quantity - scrap
        at = started_at
        for operation in order.operations:
            reported = Decimal(0)
            for report in range(progress_reports):
                last = report == progress_reports - 1
                share = (
                    produced - reported
                    if last
                    else (produced / progress_reports).quantize(Decimal(1))
                )
                reported += share
                duration = Decimal(rng.randint(300, 1800))
                at += timedelta(seconds=int(duration))
                data: dict[str, Any] = {
                    "work_order_id": order.number,
                    "operation": operation.name,
                    "work_center": operation.work_center,
                    "quantity": _quantity(share, order.unit),
                    "duration_seconds": str(duration),
                    "cycles": 1,
                    "reported_at": format_time(at),
                }
                if last and scrap and operation is order.operations[-1]:
                    data["scrap"] = _quantity(scrap, order.unit)
                shift.http_events.append(
                    make(
                        "production.workorder.progressed.v1",
                        data,
                        at,
                        operation.name,
                        report,
                    )
                )

        consumed = [
            (component, component.per_unit * order.quantity)
            for component in order.components
        ]
        completed_at = at + timedelta(minutes=5)
        lot = f"{order.number}-L1"
        completion = Completion(
            order, produced, scrap, lot, started_at, completed_at, consumed
        )
        if rng.random() < b2mml_share:
            shift.b2mml_completions.append(completion)
        else:
            shift.http_events.extend(_completion_events(completion, make))
        for component, amount in consumed:
            shift.consumed[component.item] += amount
        shift.produced[order.item] += produced
        shift.orders_completed.append(order.number)
        clock += timedelta(minutes=rng.randint(5, 15))

    shift.http_events.extend(
        _breakdowns(orders, start, rng, breakdowns_per_work_center)
    )
    return shift


def _completion_events(completion: Completion, make: Any) -> list[Event]:
    order = completion.order
    events = [
        make(
            "production.material.consumed.v1",
            {
                "work_order_id": order.number,
                "item": component.item,
                "quantity": _quantity(amount, component.unit),
                **({"lot": component.lot} if component.lot else {}),
                "consumed_at": format_time(completion.completed_at),
            },
            completion.completed_at,
            "consume",
            component.item,
        )
        for component, amount in completion.consumed
    ]
    completed: dict[str, Any] = {
        "work_order_id": order.number,
        "item": order.item,
        "quantity": _quantity(completion.produced, order.unit),
        "completed_at": format_time(completion.completed_at),
        "lot": completion.lot,
        "warehouse": order.plant,
    }
    if completion.scrap:
        completed["scrap"] = _quantity(completion.scrap, order.unit)
    events.append(
        make(
            "production.workorder.completed.v1",
            completed,
            completion.completed_at,
            "complete",
        )
    )
    events.append(
        make(
            "production.goods.produced.v1",
            {
                "work_order_id": order.number,
                "item": order.item,
                "quantity": _quantity(completion.produced, order.unit),
                "lot": completion.lot,
                "produced_at": format_time(completion.completed_at),
            },
            completion.completed_at,
            "produced",
        )
    )
    return events


def _breakdowns(
    orders: list[OrderPlan], start: datetime, rng: random.Random, per_work_center: int
) -> list[Event]:
    events = []
    centers = sorted({(o.plant, op.work_center) for o in orders for op in o.operations})
    reasons = [
        ("E101", "spindle overload"),
        ("E204", "tool breakage"),
        ("M300", "material shortage"),
        ("Q410", "quality stop"),
    ]
    for plant, center in centers:
        at = start
        for number in range(per_work_center):
            at += timedelta(minutes=rng.randint(30, 150))
            code, reason = rng.choice(reasons)
            downtime = rng.randint(120, 1500)
            machine = f"{center.replace(' ', '-').upper()}-M1"
            common: dict[str, Any] = {
                "source": f"/plants/{plant}/machines/{machine}",
                "subject": machine,
                "plant": plant,
                "partitionkey": machine,
            }
            events.append(
                Event(
                    id=_event_id(machine, "down", number),
                    type="maintenance.machine.down.v1",
                    time=format_time(at),
                    data={
                        "machine_id": machine,
                        "since": format_time(at),
                        "work_center": center,
                        "reason_code": code,
                        "reason": reason,
                    },
                    **common,
                )
            )
            up = at + timedelta(seconds=downtime)
            events.append(
                Event(
                    id=_event_id(machine, "up", number),
                    type="maintenance.machine.up.v1",
                    time=format_time(up),
                    data={
                        "machine_id": machine,
                        "since": format_time(up),
                        "work_center": center,
                        "downtime_seconds": str(downtime),
                    },
                    **common,
                )
            )
            at = up
    return events
