"""The `plantbus` command: run a hub, run the demo, inspect the catalogue."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from plantbus.errors import PlantbusError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="plantbus: an event-driven integration hub for manufacturers.",
)
schemas_app = typer.Typer(no_args_is_help=True, help="Show the event catalogue.")
app.add_typer(schemas_app, name="schemas")
console = Console()


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
    from plantbus.hub import build_hub

    _configure_logging(logging.DEBUG if verbose else logging.INFO)
    try:
        config = load_hub(hub_file)
    except PlantbusError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc

    async def main() -> None:
        hub = await build_hub(config)
        hub.install_signal_handlers()
        await hub.run()

    try:
        asyncio.run(main())
    except PlantbusError as exc:
        console.print(f"[red]{exc}[/red]")
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
        console.print(f"[red]{exc}[/red]")
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
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
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
    )
    try:
        report = asyncio.run(run_demo(options, console))
    except PlantbusError as exc:
        console.print(f"[red]The demo failed: {exc}[/red]")
        raise typer.Exit(1) from exc
    if not report.ok:
        console.print("[red]The demo finished with differences; see above.[/red]")
        raise typer.Exit(1)


@schemas_app.command("list")
def schemas_list() -> None:
    """List the event types of the catalogue."""
    from plantbus.events.catalogue import Catalogue

    table = Table("type", "version", "domain", "owner", "SLA", "partition key")
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


if __name__ == "__main__":
    app()
