"""The `plantbus` command: run a hub, run the demo, inspect the catalogue."""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Column, Table

from plantbus.errors import PlantbusError

if TYPE_CHECKING:
    from plantbus.config.model import HubConfig

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="plantbus: an event-driven integration hub for manufacturers.",
)
schemas_app = typer.Typer(no_args_is_help=True, help="Show the event catalogue.")
app.add_typer(schemas_app, name="schemas")
# Outside a terminal rich would wrap at 80 columns and split URLs and paths.
console = Console(width=None if sys.stdout.isatty() else 120)


def _print_error(message: str) -> None:
    # Messages quote user values such as '[/x]', which rich would read as markup.
    console.print(message, style="red", markup=False, highlight=False)


def _configure_logging(level: int) -> None:
    from plantbus.observability.logging import configure_logging

    configure_logging(level)


def _load_hub(hub_file: Path) -> HubConfig:
    """Load a hub file, or print the error and exit with code 2."""
    from plantbus.config import load_hub

    try:
        return load_hub(hub_file)
    except PlantbusError as exc:
        _print_error(str(exc))
        raise typer.Exit(2) from exc


@app.command()
def run(
    hub_file: Annotated[Path, typer.Argument(help="The hub file (YAML) to run.")],
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log debug messages too.")
    ] = False,
) -> None:
    """Run a hub as a long-lived service until SIGTERM or SIGINT."""
    from plantbus.hub import build_hub, tune_garbage_collector

    _configure_logging(logging.DEBUG if verbose else logging.INFO)
    config = _load_hub(hub_file)

    async def main() -> None:
        hub = await build_hub(config)
        tune_garbage_collector()
        hub.install_signal_handlers()
        await hub.run()

    try:
        asyncio.run(main())
    except PlantbusError as exc:
        _print_error(str(exc))
        raise typer.Exit(1) from exc


@app.command()
def check(
    hub_file: Annotated[Path, typer.Argument(help="The hub file (YAML) to check.")],
) -> None:
    """Check a hub file without starting anything."""
    config = _load_hub(hub_file)
    console.print(
        f"{hub_file}: valid: {len(config.sources)} sources, {len(config.sinks)} "
        f"sinks, {len(config.pipelines)} pipelines."
    )


class DemoBackbone(enum.StrEnum):
    embedded = "embedded"
    jetstream = "jetstream"


class DemoState(enum.StrEnum):
    sqlite = "sqlite"
    postgres = "postgres"


@app.command()
def demo(
    orders_per_plant: Annotated[
        int, typer.Option(help="Production orders released in each of the two plants.")
    ] = 18,
    workdir: Annotated[
        Path,
        typer.Option(
            help="Folder for the ERP database, the log and the demo's files; "
            "emptied first."
        ),
    ] = Path("var/demo"),
    keep_running: Annotated[
        bool,
        typer.Option(
            "--keep-running",
            help="Leave the hub, its API and the ERP running after "
            "the report, until Ctrl-C.",
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the shift simulator.")] = 7,
    pace: Annotated[
        float,
        typer.Option(
            help="Seconds over which the shift's events are sent, in their time "
            "order; 0 sends them all at once."
        ),
    ] = 75.0,
    b2mml_xsd: Annotated[
        Path | None,
        typer.Option(
            help="Folder of the official B2MML XSDs, with V0600 inside; default "
            "$PLANTBUS_B2MML_XSD, else ../shared/samples/b2mml/xsd beside "
            "the repository."
        ),
    ] = None,
    backbone: Annotated[
        DemoBackbone,
        typer.Option(
            help="Event log: embedded (SQLite in the work folder) or jetstream (a "
            "new stream on --nats-url, deleted after the run unless "
            "--keep-running)."
        ),
    ] = DemoBackbone.embedded,
    state: Annotated[
        DemoState,
        typer.Option(
            help="State store: sqlite (in the work folder) or postgres (a new "
            "database on the --postgres-dsn server, dropped after the run unless "
            "--keep-running)."
        ),
    ] = DemoState.sqlite,
    nats_url: Annotated[
        str, typer.Option(help="NATS server URLs, comma-separated, for jetstream.")
    ] = "nats://127.0.0.1:4222",
    postgres_dsn: Annotated[
        str,
        typer.Option(
            help="Connection string of a PostgreSQL server and a user that may "
            "create databases, for postgres; the demo creates its own database."
        ),
    ] = "host=127.0.0.1 port=5432 user=postgres dbname=postgres",
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the hub's log lines too.")
    ] = False,
) -> None:
    """Simulate a shift in two plants and post it to a real Tryton ERP."""
    from plantbus.demo import DemoOptions, run_demo
    from plantbus.demo_backends import DemoBackends

    # The demo's own output is its progress and report; the hub's log lines
    # only show up when asked for, or when something goes wrong.
    _configure_logging(logging.DEBUG if verbose else logging.ERROR)
    options = DemoOptions(
        orders_per_plant=orders_per_plant,
        workdir=workdir,
        keep_running=keep_running,
        seed=seed,
        pace_seconds=pace,
        b2mml_xsd=b2mml_xsd,
        backends=DemoBackends(
            backbone=backbone.value,
            state=state.value,
            nats_url=nats_url,
            postgres_dsn=postgres_dsn,
        ),
    )
    try:
        report = asyncio.run(run_demo(options, console))
    except PlantbusError as exc:
        _print_error(f"The demo failed: {exc}")
        raise typer.Exit(1) from exc
    if not report.ok:
        console.print("[red]The demo finished with differences; see above.[/red]")
        raise typer.Exit(1)


@schemas_app.command("list")
def schemas_list() -> None:
    """List the event types of the catalogue."""
    from plantbus.events.catalogue import Catalogue

    table = Table("version", "domain", "owner", "SLA", "partition key")
    table.columns.insert(0, Column("type", no_wrap=True))
    for event_type in Catalogue.load():
        table.add_row(
            event_type.name,
            event_type.version,
            event_type.domain,
            event_type.owner,
            event_type.sla.name,
            event_type.partition_field,
        )
    console.print(table)


@schemas_app.command("show")
def schemas_show(
    event_type: Annotated[
        str,
        typer.Argument(help="Event type, such as production.workorder.completed.v1"),
    ],
) -> None:
    """Print the JSON Schema of an event type."""
    from plantbus.events.catalogue import Catalogue

    found = Catalogue.load().get(event_type)
    if found is None:
        console.print(
            f"[red]No event type {event_type!r} in the catalogue; "
            f"`plantbus schemas list` shows the known types.[/red]"
        )
        raise typer.Exit(2)
    typer.echo(json.dumps(found.schema, indent=2))


sim_app = typer.Typer(no_args_is_help=True, help="Run simulated target systems.")
app.add_typer(sim_app, name="sim")


@sim_app.command("serve")
def sim_serve(
    system: Annotated[
        str,
        typer.Argument(
            help="wms, cmms, qms, procurement or supplier-portal.",
        ),
    ],
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    rate: Annotated[
        float | None,
        typer.Option(
            help="Requests per second that the rate limit allows; no limit when "
            "left out."
        ),
    ] = None,
    token_lifetime: Annotated[
        float, typer.Option(help="Lifetime of issued access tokens, in seconds.")
    ] = 3600.0,
) -> None:
    """Serve the reference server of a SaaS system, such as a WMS or a CMMS."""
    from plantbus.sim.refservers import SYSTEMS, build
    from plantbus.sim.refservers.faults import RateLimit

    if system not in SYSTEMS:
        _print_error(
            f"No reference server for system {system!r}; choose one of "
            f"{', '.join(SYSTEMS)}."
        )
        raise typer.Exit(2)
    _configure_logging(logging.INFO)
    server = build(
        system,
        rate_limit=RateLimit(rate_per_second=rate),
        token_lifetime_seconds=token_lifetime,
    )
    auth = server.auth
    console.print(
        f"Reference {system} on http://{host}:{port}: OAuth2 client "
        f"{auth.client_id!r} with secret {auth.client_secret!r} at /oauth/token, "
        f"or header {auth.api_key_header}: {sorted(auth.api_keys)[0]}. These "
        f"are test credentials; the OpenAPI document is at /openapi.json.",
        markup=False,
    )
    server.run(host, port)


# The `dlq` and `replay` commands register themselves on `app`.
from plantbus import cli_admin  # noqa: E402, F401

if __name__ == "__main__":
    app()
