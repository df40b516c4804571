"""`plantbus demo`: a simulated shift of two plants posted to a real Tryton ERP.

The demo builds a Tryton database for a demo manufacturer, starts `trytond`
on loopback, releases production orders in Tryton, runs the demo hub file
(`examples/demo-plant/hub.yaml`) and feeds it a shift of shop-floor activity
through the HTTP source and B2MML files. It ends with a report read back from
Tryton and from the hub, and checks that the ERP booked what the shop floor
reported.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from plantbus.config import load_hub
from plantbus.connectors.tryton.client import TrytonClient
from plantbus.demo_backends import DemoBackends, fresh_backends
from plantbus.errors import PlantbusError
from plantbus.events.envelope import Event, parse_time
from plantbus.formats.b2mml.writer import MaterialLine, write_production_performance
from plantbus.hub import Hub, build_hub
from plantbus.report import DemoReport, build_report, print_report
from plantbus.sim import erp_setup
from plantbus.sim.shift import (
    Completion,
    Component,
    Operation,
    OrderPlan,
    Shift,
    simulate_shift,
)
from plantbus.sim.trytond_server import TrytondServer, free_port
from plantbus.state.store import DeadLetterFilter

logger = logging.getLogger("plantbus.demo")

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
HUB_FILE = PACKAGE_ROOT / "examples" / "demo-plant" / "hub.yaml"
ERP_PASSWORD = "admin"
HTTP_BATCH = 50


@dataclass
class DemoOptions:
    """Size, pace and folders of one demo run."""

    orders_per_plant: int = 18
    workdir: Path = Path("var/demo")
    keep_running: bool = False
    seed: int = 7
    timeout_seconds: float = 150.0
    # Wall-clock seconds over which the shift is sent; 0 sends it at once.
    pace_seconds: float = 0.0
    b2mml_xsd: Path | None = None
    api_port: int = 0
    # By default the embedded log and SQLite state of the hub file.
    backends: DemoBackends = field(default_factory=DemoBackends)


@dataclass
class Sent:
    """Counts of what the demo sent, and the rejections the hub returned."""

    accepted: int = 0
    rejected_http: list[str] = field(default_factory=list)
    files: int = 0


def b2mml_xsd_folder(options: DemoOptions) -> Path:
    """Return the B2MML XSD folder: the option, $PLANTBUS_B2MML_XSD or the samples."""
    if options.b2mml_xsd is not None:
        return options.b2mml_xsd
    if "PLANTBUS_B2MML_XSD" in os.environ:
        return Path(os.environ["PLANTBUS_B2MML_XSD"])
    return (PACKAGE_ROOT / ".." / "shared" / "samples" / "b2mml" / "xsd").resolve()


async def run_demo(options: DemoOptions, console: Console) -> DemoReport:
    """Run the whole demo and return its report."""
    workdir = options.workdir.resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    xsd = b2mml_xsd_folder(options)
    if not (xsd / "V0600").is_dir():
        raise PlantbusError(
            f"The B2MML schema folder {str(xsd)!r} has no V0600 subfolder. Pass "
            f"--b2mml-xsd or set PLANTBUS_B2MML_XSD to the folder of the official "
            f"B2MML XSDs."
        )

    started = time.monotonic()
    with console.status(
        "Preparing the Tryton ERP database (first run builds a "
        "template, later runs copy it)..."
    ):
        database = await asyncio.to_thread(
            erp_setup.create_database, workdir / "erp", "demo"
        )
    server = TrytondServer(database_path=database, work_dir=workdir / "erp")
    await asyncio.to_thread(server.start)
    console.print(
        f"Tryton ERP serving database 'demo' on {server.url} (log: {server.log_path})"
    )
    try:
        async with fresh_backends(
            options.backends, console, keep=options.keep_running
        ) as backends:
            return await _run_with_erp(
                options, console, server, workdir, xsd, started, backends
            )
    finally:
        await asyncio.to_thread(server.stop)


async def _run_with_erp(
    options: DemoOptions,
    console: Console,
    server: TrytondServer,
    workdir: Path,
    xsd: Path,
    started: float,
    backends: DemoBackends,
) -> DemoReport:
    client = TrytonClient(server.url, server.database, "admin", ERP_PASSWORD)
    await client.start()
    try:
        numbers = []
        with console.status("Releasing production orders in Tryton..."):
            for plant in ("P1", "P2"):
                numbers += await erp_setup.release_orders(
                    client, plant, options.orders_per_plant
                )
        console.print(f"Released {len(numbers)} production orders in Tryton.")
        plans = await read_order_plans(client, numbers)

        api_port = options.api_port or free_port()
        environ = {
            **os.environ,
            "TRYTON_URL": server.url,
            "TRYTON_DATABASE": server.database,
            "TRYTON_PASSWORD": ERP_PASSWORD,
            "PLANTBUS_DATA_DIR": str(workdir / "hub"),
            "PLANTBUS_INBOX": str(workdir / "inbox"),
            "PLANTBUS_B2MML_XSD": str(xsd),
            "PLANTBUS_API_PORT": str(api_port),
        }
        config = backends.configure(load_hub(HUB_FILE, environ=environ))
        (workdir / "inbox").mkdir(parents=True, exist_ok=True)
        hub = await build_hub(config)
        hub_task = asyncio.create_task(hub.run())
        await hub.started.wait()
        console.print(
            f"Hub running; its API is at http://127.0.0.1:{api_port} "
            f"(POST /v1/events, GET /v1/health, /v1/catalogue, /metrics)"
        )

        shift = _simulate_past_shift(plans, options.seed)
        try:
            sent = await _feed(
                hub,
                shift,
                api_port,
                workdir / "inbox",
                console,
                options,
            )
            report = await build_report(hub, client, shift, sent.rejected_http, started)
            report.backends = backends.describe(str(config.hub.data_dir))
            report.stream, report.database = backends.stream, backends.database
            print_report(report, console)
            if options.keep_running:
                console.print(
                    f"Hub and ERP keep running (API http://127.0.0.1:{api_port}, "
                    f"ERP {server.url}, database {server.database!r}, user admin, "
                    f"password {ERP_PASSWORD!r}); Ctrl-C stops."
                )
                hub.install_signal_handlers()
                await hub.stopping.wait()
                console.print("Stopping the hub and the ERP.")
        finally:
            hub.stop()
            await hub_task
        return report
    finally:
        await client.close()


async def read_order_plans(client: TrytonClient, numbers: list[str]) -> list[OrderPlan]:
    """Read released productions with their inputs and works from Tryton."""
    productions = await client.search_read(
        "production",
        [("number", "in", numbers)],
        ["number", "warehouse", "product", "quantity", "unit", "inputs", "works"],
        order=[("id", "ASC")],
    )
    moves = await client.read(
        "stock.move",
        [m for p in productions for m in p["inputs"]],
        ["product", "quantity", "unit"],
    )
    works = await client.read(
        "production.work",
        [w for p in productions for w in p["works"]],
        ["operation", "work_center", "sequence"],
    )
    products = _names(
        await client.read(
            "product.product",
            sorted({p["product"] for p in productions} | {m["product"] for m in moves}),
            ["code"],
        ),
        "code",
    )
    units = _names(
        await client.read(
            "product.uom",
            sorted({p["unit"] for p in productions} | {m["unit"] for m in moves}),
            ["symbol"],
        ),
        "symbol",
    )
    warehouses = _names(
        await client.read(
            "stock.location", sorted({p["warehouse"] for p in productions}), ["code"]
        ),
        "code",
    )
    operations = _names(
        await client.read(
            "production.routing.operation",
            sorted({w["operation"] for w in works}),
            ["name"],
        ),
        "name",
    )
    centers = _names(
        await client.read(
            "production.work.center",
            sorted({w["work_center"] for w in works}),
            ["name"],
        ),
        "name",
    )
    move_by_id = {m["id"]: m for m in moves}
    work_by_id = {w["id"]: w for w in works}

    plans = []
    for production in productions:
        quantity = Decimal(str(production["quantity"]))
        plant = warehouses[production["warehouse"]]
        components = tuple(
            Component(
                item=products[move["product"]],
                per_unit=(Decimal(str(move["quantity"])) / quantity).normalize(),
                unit=units[move["unit"]],
                lot=f"{plant}-{products[move['product']]}-L1",
            )
            for move in (move_by_id[i] for i in production["inputs"])
        )
        steps = sorted(
            (work_by_id[i] for i in production["works"]),
            key=lambda work: (work["sequence"] or 0, work["id"]),
        )
        plans.append(
            OrderPlan(
                number=production["number"],
                plant=plant,
                item=products[production["product"]],
                quantity=quantity,
                unit=units[production["unit"]],
                components=components,
                operations=tuple(
                    Operation(operations[w["operation"]], centers[w["work_center"]])
                    for w in steps
                ),
            )
        )
    return plans


def _names(rows: list[dict[str, Any]], field_name: str) -> dict[int, str]:
    return {row["id"]: str(row[field_name]) for row in rows}


def _simulate_past_shift(plans: list[OrderPlan], seed: int) -> Shift:
    """Simulate a shift of about eight hours that ends before now.

    Tryton rejects moves with an effective date in the future, and a shift
    that started eight hours ago can run past midnight.
    """
    start = datetime.now(UTC) - timedelta(hours=8)
    shift = simulate_shift(plans, start=start, seed=seed)
    latest = shift.latest
    limit = datetime.now(UTC) - timedelta(minutes=1)
    if latest is not None and latest > limit:
        # The same seed gives the same shift, only earlier.
        shift = simulate_shift(plans, start=start - (latest - limit), seed=seed)
    return shift


async def _feed(
    hub: Hub,
    shift: Shift,
    api_port: int,
    inbox: Path,
    console: Console,
    options: DemoOptions,
) -> Sent:
    """Send the shift to the hub in time order and wait until it has caught up."""
    sent = Sent()
    timeline = _timeline(shift)
    first = timeline[0][0]
    span = max((timeline[-1][0] - first).total_seconds(), 1.0)
    # Compress the shift into `pace_seconds` of wall time, so that events
    # arrive spread out as a real shift sends them, only faster.
    scale = options.pace_seconds / span
    with Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=False,
    ) as progress:
        sending = progress.add_task("events sent", total=shift.event_count)
        posting = progress.add_task("ERP postings", total=None)
        url = f"http://127.0.0.1:{api_port}/v1/events"
        loop = asyncio.get_running_loop()
        started = loop.time()
        operator: asyncio.Task[None] | None = None
        async with aiohttp.ClientSession() as http:
            batch: list[Event] = []
            for index, (moment, item) in enumerate(timeline):
                due = started + (moment - first).total_seconds() * scale
                if batch and (loop.time() < due or len(batch) >= HTTP_BATCH):
                    await _post_batch(http, url, batch, sent)
                    progress.advance(sending, len(batch))
                    batch = []
                    progress.update(posting, completed=await _erp_deliveries(hub))
                await asyncio.sleep(max(0.0, due - loop.time()))
                if index == len(timeline) // 2:
                    await _send_bad_inputs(http, url, shift, inbox, sent)
                    operator = asyncio.create_task(_operator(hub, console))
                if isinstance(item, Event):
                    batch.append(item)
                    continue
                name = f"{item.order.number}.xml"
                _drop(inbox, name, _performance(item))
                sent.files += 1
                progress.advance(sending, 2 + len(item.consumed))
            if batch:
                await _post_batch(http, url, batch, sent)
                progress.advance(sending, len(batch))

        deadline = loop.time() + options.timeout_seconds
        while loop.time() < deadline:
            progress.update(posting, completed=await _erp_deliveries(hub))
            if await _caught_up(hub, inbox):
                break
            await asyncio.sleep(0.3)
        else:
            console.print(
                f"[yellow]The hub did not catch up within "
                f"{options.timeout_seconds:.0f} s after the shift; the report "
                f"shows where it stood.[/yellow]"
            )
        delivered = await _erp_deliveries(hub)
        progress.update(posting, completed=delivered, total=delivered)
    if operator is not None:
        await operator
    return sent


def _timeline(shift: Shift) -> list[tuple[datetime, Event | Completion]]:
    """Return the shift's HTTP events and B2MML completions in time order."""
    timeline: list[tuple[datetime, Event | Completion]] = [
        (parse_time(event.time or ""), event) for event in shift.http_events
    ]
    timeline += [(c.completed_at, c) for c in shift.b2mml_completions]
    timeline.sort(key=lambda entry: entry[0])
    return timeline


async def _send_bad_inputs(
    http: aiohttp.ClientSession, url: str, shift: Shift, inbox: Path, sent: Sent
) -> None:
    """Send what a real shop floor sends now and then, to show what happens."""
    for bad in _bad_inputs(shift):
        await _post_batch(http, url, [bad], sent)
    # A file that is not B2MML at all, as a misconfigured export would write.
    _drop(
        inbox,
        "broken-export.xml",
        b"<ProductionPerformance><ID>42</Oops></ProductionPerformance>",
    )


async def _operator(hub: Hub, console: Console, timeout: float = 60.0) -> None:
    """Act as plant support: discard the delivery dead letter of the unknown item.

    Its work order's later events wait behind it (key parking); once it is
    discarded, the pipeline releases them in log order.
    """
    from plantbus.admin import AdminService

    admin = AdminService(hub.state, hub.config)
    deadline = time.monotonic() + timeout
    try:
        await _discard_unknown_item(admin, hub, console, deadline)
    except PlantbusError as exc:
        # The hub stopped under the operator; the demo reports that failure.
        console.print(f"[yellow]Support could not act: {exc}[/yellow]")


async def _discard_unknown_item(
    admin: Any, hub: Hub, console: Console, deadline: float
) -> None:
    while time.monotonic() < deadline:
        letters = await hub.state.dead_letters(
            DeadLetterFilter(sink="erp", error_contains="C-999")
        )
        if letters:
            # Give the key time to gather the events that wait behind it.
            await asyncio.sleep(2.0)
            held = await hub.state.dead_letters(
                DeadLetterFilter(status="parked", pipeline=letters[0].pipeline)
            )
            result = await admin.discard(
                DeadLetterFilter(ids=[letter.id for letter in letters if letter.id]),
                actor="demo-operator",
                reason="item C-999 does not exist; the consumption is booked by hand",
            )
            numbers = ", ".join(f"#{number}" for number in result.done)
            if held:
                waiting = (
                    f"{len(held)} later events of the same work order waited "
                    "behind it and now go to the ERP in order."
                )
            else:
                waiting = "No later event of that work order was waiting behind it."
            console.print(
                f"Plant support (played by the demo) discarded dead letter "
                f"{numbers}: item C-999 does not exist. {waiting}"
            )
            return
        await asyncio.sleep(0.5)


async def _post_batch(
    http: aiohttp.ClientSession, url: str, events: list[Event], sent: Sent
) -> None:
    body = b"[" + b",".join(event.to_json() for event in events) + b"]"
    headers = {"Content-Type": "application/cloudevents-batch+json"}
    async with http.post(url, data=body, headers=headers) as response:
        if response.status == 202:
            sent.accepted += len(events)
            return
        problem = await response.json(content_type=None)
        for error in problem.get("errors", []):
            sent.rejected_http.append(
                f"HTTP {response.status}: event {error.get('event_id')!r} field "
                f"`{error.get('field') or error.get('path')}` is "
                f"{error.get('value')!r}: {error.get('rule')}"
            )
        if not problem.get("errors"):
            sent.rejected_http.append(f"HTTP {response.status}: {problem}")


def _bad_inputs(shift: Shift) -> list[Event]:
    """Return input a real shop floor sends now and then, to show what happens."""
    order = shift.orders_completed[0]
    comma = Event.create(
        "production.workorder.progressed.v1",
        "/plants/P1/mes",
        {
            "work_order_id": order,
            "quantity": {"value": "12,5", "unit": "u"},
            "duration_seconds": "60",
        },
        partitionkey=order,
    )
    unknown_item = Event.create(
        "production.material.consumed.v1",
        "/plants/P1/mes",
        {
            "work_order_id": order,
            "item": "C-999",
            "quantity": {"value": "1", "unit": "u"},
        },
        partitionkey=order,
    )
    return [comma, unknown_item]


def _performance(completion: Any) -> bytes:
    order = completion.order
    return write_production_performance(
        work_order_id=order.number,
        produced=MaterialLine(
            order.item, completion.produced, order.unit, completion.lot
        ),
        consumed=[
            MaterialLine(c.item, amount, c.unit, c.lot)
            for c, amount in completion.consumed
        ],
        started_at=completion.started_at,
        ended_at=completion.completed_at,
    )


def _drop(inbox: Path, name: str, content: bytes) -> None:
    # Write beside the inbox, then rename, so the folder source never reads a
    # half-written file.
    partial = inbox / f".{name}.part"
    partial.write_bytes(content)
    partial.rename(inbox / name)


async def _erp_deliveries(hub: Hub) -> int:
    return len(await hub.state.deliveries(sink="erp"))


async def _caught_up(hub: Hub, inbox: Path) -> bool:
    if any(
        path.is_file() and not path.name.startswith(".") for path in inbox.iterdir()
    ):
        return False
    for pipeline in hub.pipelines:
        if await hub.log.lag(pipeline.group) > 0:
            return False
        if await hub.state.parked_keys(pipeline.name):
            return False
    return True
