"""The demo's closing report: what Tryton booked and what the hub did."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

from rich.console import Console
from rich.table import Table

from plantbus.connectors.tryton.client import TrytonClient
from plantbus.hub import Hub
from plantbus.sim.erp_data import PLANTS
from plantbus.sim.shift import Shift
from plantbus.state.store import DeadLetterFilter


@dataclass
class DemoReport:
    """Figures read back from Tryton and from the hub after a demo run."""

    orders_total: int = 0
    orders_done: int = 0
    produced: dict[str, Decimal] = field(default_factory=dict)
    scrapped: dict[str, Decimal] = field(default_factory=dict)
    consumed: dict[str, Decimal] = field(default_factory=dict)
    expected_produced: dict[str, Decimal] = field(default_factory=dict)
    expected_consumed: dict[str, Decimal] = field(default_factory=dict)
    stock: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    events_by_type: dict[str, int] = field(default_factory=dict)
    rejected_at_ingest: list[str] = field(default_factory=list)
    dead_letters: list[tuple[str, str, str]] = field(default_factory=list)
    # Status of each dead letter above: open, discarded, ...
    dead_letter_statuses: list[str] = field(default_factory=list)
    # Events held back behind a dead letter of their key, then released.
    released_after_parking: int = 0
    erp_deliveries: int = 0
    latency_p50: float | None = None
    latency_p95: float | None = None
    seconds: float = 0.0
    differences: list[str] = field(default_factory=list)
    # One line naming the hub's log and state store, and the run's stream and
    # database (None with the embedded log or with SQLite state).
    backends: str = ""
    stream: str | None = None
    database: str | None = None

    @property
    def ok(self) -> bool:
        """Return True when Tryton booked exactly what the shop floor reported."""
        return not self.differences


async def build_report(
    hub: Hub,
    client: TrytonClient,
    shift: Shift,
    rejected_http: list[str],
    started: float,
) -> DemoReport:
    """Read the figures of the report from Tryton and from the hub."""
    report = DemoReport(rejected_at_ingest=list(rejected_http))
    await _read_erp(client, shift, report)

    counts: Counter[str] = Counter()
    positions = dict.fromkeys(range(hub.log.partitions), 0)
    while records := await hub.log.read(positions, 5000):
        for record in records:
            counts[record.event.type] += 1
            positions[record.partition] = record.offset
    report.events_by_type = dict(sorted(counts.items()))

    for letter in await hub.state.dead_letters(DeadLetterFilter(status=None)):
        if letter.stage == "parked" and letter.details.get("status") == "redriven":
            report.released_after_parking += 1
            continue
        report.dead_letters.append(
            (
                letter.stage,
                letter.event_id or letter.details.get("file", letter.source),
                letter.error,
            )
        )
        report.dead_letter_statuses.append(str(letter.details.get("status", "")))

    deliveries = await hub.state.deliveries(sink="erp")
    report.erp_deliveries = len(deliveries)
    latencies = sorted(d.latency for d in deliveries)
    if len(latencies) >= 2:
        cuts = statistics.quantiles(latencies, n=100, method="inclusive")
        report.latency_p50, report.latency_p95 = cuts[49], cuts[94]

    report.expected_produced = {k: Decimal(v) for k, v in shift.produced.items()}
    report.expected_consumed = {k: Decimal(v) for k, v in shift.consumed.items()}
    for label, booked, expected in (
        ("produced", report.produced, report.expected_produced),
        ("consumed", report.consumed, report.expected_consumed),
    ):
        for item in sorted(set(booked) | set(expected)):
            if booked.get(item, Decimal(0)) != expected.get(item, Decimal(0)):
                report.differences.append(
                    f"{item}: Tryton {label} {booked.get(item, 0)}, the shop floor "
                    f"reported {expected.get(item, 0)}"
                )
    if report.orders_done != len(shift.orders_completed):
        report.differences.append(
            f"{report.orders_done} productions are done in Tryton, the shop floor "
            f"completed {len(shift.orders_completed)}"
        )
    report.seconds = time.monotonic() - started
    return report


async def _read_erp(client: TrytonClient, shift: Shift, report: DemoReport) -> None:
    numbers = shift.orders_completed
    productions = await client.search_read(
        "production", [("number", "in", numbers)], ["state", "inputs", "outputs"]
    )
    report.orders_total = len(productions)
    report.orders_done = sum(1 for p in productions if p["state"] == "done")
    move_ids = [m for p in productions for m in p["inputs"] + p["outputs"]]
    moves = await client.read(
        "stock.move",
        move_ids,
        ["product", "quantity", "state", "production_input", "to_location"],
    )
    codes = {
        row["id"]: row["code"]
        for row in await client.read(
            "product.product", sorted({m["product"] for m in moves}), ["code"]
        )
    }
    warehouses = await client.search_read(
        "stock.location",
        [("type", "=", "warehouse"), ("code", "in", PLANTS)],
        ["code", "waste_locations"],
        order=[("code", "ASC")],
    )
    waste = {location for w in warehouses for location in w["waste_locations"]}
    for move in moves:
        if move["state"] != "done":
            continue
        if move["production_input"]:
            target = report.consumed
        elif move["to_location"] in waste:
            target = report.scrapped
        else:
            target = report.produced
        code = codes[move["product"]]
        target[code] = target.get(code, Decimal(0)) + Decimal(str(move["quantity"]))

    for warehouse in warehouses:
        rows = await client.call(
            "model.product.product.search_read",
            [("code", "!=", None)],
            0,
            None,
            [("code", "ASC")],
            ["code", "quantity"],
            {**client.context, "locations": [warehouse["id"]]},
        )
        report.stock[warehouse["code"]] = {
            row["code"]: Decimal(str(row["quantity"])) for row in rows
        }


def _number(value: Decimal) -> str:
    return f"{value.normalize():f}"


def print_report(report: DemoReport, console: Console) -> None:
    """Print the report as tables."""
    console.rule("Tryton ERP")
    console.print(
        f"Production orders done: {report.orders_done} of {report.orders_total}"
    )
    items = Table(
        "item",
        "produced",
        "scrapped",
        "consumed",
        *(f"stock {plant}" for plant in report.stock),
        title="Quantities booked in Tryton, and stock after the shift",
    )
    for item in sorted(
        set(report.produced)
        | set(report.consumed)
        | {i for s in report.stock.values() for i in s}
    ):
        items.add_row(
            item,
            _number(report.produced.get(item, Decimal(0))),
            _number(report.scrapped.get(item, Decimal(0))),
            _number(report.consumed.get(item, Decimal(0))),
            *(_number(s.get(item, Decimal(0))) for s in report.stock.values()),
        )
    console.print(items)

    console.rule("Hub")
    if report.backends:
        console.print(report.backends, markup=False, highlight=False)
    types = Table("event type", "events in the log", title="Events per type")
    for event_type, count in report.events_by_type.items():
        types.add_row(event_type, str(count))
    types.add_row("total", str(sum(report.events_by_type.values())))
    console.print(types)
    console.print(
        f"ERP postings: {report.erp_deliveries}; delivery latency from "
        f"append to ERP confirmation: p50 {_seconds(report.latency_p50)}, "
        f"p95 {_seconds(report.latency_p95)}"
    )
    if report.rejected_at_ingest:
        console.print("Rejected at ingest (the sender received the error at once):")
        for line in report.rejected_at_ingest:
            console.print(f"  {line}")
    if report.released_after_parking:
        console.print(
            f"{report.released_after_parking} events waited behind a dead letter "
            f"of their work order and were delivered in order once it was resolved."
        )
    letters = Table("stage", "status", "event or file", "reason", title="Dead letters")
    statuses = report.dead_letter_statuses or [""] * len(report.dead_letters)
    for (stage, subject, reason), status in zip(
        report.dead_letters, statuses, strict=True
    ):
        letters.add_row(stage, status, str(subject), reason)
    console.print(letters)

    if report.differences:
        console.rule("[red]Differences between the ERP and the shop floor")
        for line in report.differences:
            console.print(f"[red]{line}[/red]")
    else:
        console.print(
            "[green]Tryton booked exactly what the shop floor reported.[/green]"
        )
    console.print(f"Demo finished in {report.seconds:.1f} s.")


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:.0f} ms"
