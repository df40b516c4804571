"""The `plantbus` command: run a hub, run the demo, inspect the catalogue."""

from __future__ import annotations

import asyncio
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
    pass

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


@app.command()
def run(
    hub_file: Annotated[Path, typer.Argument(help="The hub file (YAML) to run.")],
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log debug messages too.")
    ] = False,
) -> None:
    """Run a hub as a long-lived service until SIGTERM or SIGINT."""
    from plantbus.config import load_hub
    from plantbus.hub import build_hub, tune_garbage_collector

    _configure_logging(logging.DEBUG if verbose else logging.INFO)
    try:
        config = load_hub(hub_file)
    except PlantbusError as exc:
        _print_error(str(exc))
        raise typer.Exit(2) from exc

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
    from plantbus.config import load_hub

    try:
        config = load_hub(hub_file)
    except PlantbusError as exc:
        _print_error(str(exc))
        raise typer.Exit(2) from exc
    console.print(
        f"{hub_file}: valid: {len(config.sources)} sources, {len(config.sinks)} "
        f"sinks, {len(config.pipelines)} pipelines."
    )


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
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the hub's log lines too.")
    ] = False,
) -> None:
    """Simulate a shift in two plants and post it to a real Tryton ERP."""
    from plantbus.demo import DemoOptions, run_demo

    # The demo's own output is its progress and report; the hub's log lines
    # only show up when asked for, or when something goes wrong.
    _configure_logging(logging.DEBUG if verbose else logging.WARNING)
    options = DemoOptions(
        orders_per_plant=orders_per_plant,
        workdir=workdir,
        keep_running=keep_running,
        seed=seed,
        pace_seconds=pace,
        b2mml_xsd=b2mml_xsd,
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


# The `dlq` and `replay` commands register themselves on `app`.
from plantbus import cli_admin  # noqa: E402, F401

if __name__ == "__main__":
    app()
