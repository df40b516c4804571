"""The `plantbus dlq` and `plantbus replay` commands: dead letters and replay.

They open the hub file's state store beside a running hub (SQLite in WAL mode
allows a second process); the running pipelines pick up redrive and replay
requests from there.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Column, Table

from plantbus.cli import _print_error, app, console
from plantbus.errors import PlantbusError

if TYPE_CHECKING:
    from plantbus.admin import ActionResult, AdminService
    from plantbus.state.dead_letters import DeadLetter
    from plantbus.state.store import DeadLetterFilter

dlq_app = typer.Typer(
    no_args_is_help=True,
    help="List, show, redrive and discard dead letters; works beside a running hub.",
)
app.add_typer(dlq_app, name="dlq")

HubFile = Annotated[Path, typer.Argument(help="The hub file (YAML) of the hub.")]
TypeOption = Annotated[
    str | None, typer.Option("--type", help="Only dead letters of this event type.")
]
SinkOption = Annotated[
    str | None, typer.Option(help="Only dead letters of deliveries to this sink.")
]
PipelineOption = Annotated[
    str | None, typer.Option(help="Only dead letters of this pipeline.")
]
ErrorOption = Annotated[
    str | None, typer.Option("--error", help="Only errors that contain this text.")
]
SinceOption = Annotated[
    str | None,
    typer.Option(help="Only dead letters stored at or after this ISO 8601 time."),
]
UntilOption = Annotated[
    str | None, typer.Option(help="Only dead letters stored before this ISO 8601 time.")
]
ActorOption = Annotated[
    str | None,
    typer.Option(help="Name recorded in the audit log; default the OS user name."),
]
IdsArgument = Annotated[
    list[int] | None,
    typer.Argument(help="Dead letter ids; without ids, the filters select."),
]
# Characters of the error shown per row of `dlq list`.
_ERROR_WIDTH = 60
# Bytes of a binary payload shown by `dlq show`.
_HEX_EXCERPT = 256


@asynccontextmanager
async def _admin(hub_file: Path) -> AsyncIterator[AdminService]:
    from plantbus.admin import AdminService
    from plantbus.config import load_hub
    from plantbus.state.factory import make_state_store

    config = load_hub(hub_file)
    path = config.hub.data_dir / "state.sqlite"
    if config.state.kind == "sqlite" and not path.exists():
        raise PlantbusError(
            f"There is no state store at {str(path)!r}, the `hub.data_dir` of "
            f"{str(hub_file)!r}: start the hub once with `plantbus run` first."
        )
    state = make_state_store(config)
    await state.start()
    try:
        yield AdminService(state, config)
    finally:
        await state.close()


def _parse_time(value: str | None, option: str) -> float | None:
    """Parse an ISO 8601 option value, or print the error and exit with code 2."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        _print_error(
            f"Option `{option}` is {value!r}: expected an ISO 8601 time such as "
            f"'2026-03-01T06:00:00+01:00'."
        )
        raise typer.Exit(2) from exc
    # A time without an offset is the operator's local time.
    try:
        return moment.astimezone().timestamp()
    except (ValueError, OverflowError) as exc:
        _print_error(
            f"Option `{option}` is {value!r}, which is out of range; give a time "
            f"after 1970."
        )
        raise typer.Exit(2) from exc


def _letter_filter(
    ids: list[int] | None,
    event_type: str | None,
    sink: str | None,
    pipeline: str | None,
    error: str | None,
    since: str | None,
    until: str | None,
) -> DeadLetterFilter:
    from plantbus.state.store import DeadLetterFilter

    return DeadLetterFilter(
        ids=ids or None,
        event_type=event_type,
        pipeline=pipeline,
        sink=sink,
        error_contains=error,
        since=_parse_time(since, "--since"),
        until=_parse_time(until, "--until"),
    )


def _run_admin(hub_file: Path, action: str, work: Callable[[AdminService], Any]) -> Any:
    async def main() -> Any:
        async with _admin(hub_file) as admin:
            return await work(admin)

    try:
        return asyncio.run(main())
    except PlantbusError as exc:
        _print_error(f"Cannot {action}: {exc}")
        raise typer.Exit(2) from exc


def _local_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds).astimezone().isoformat(timespec="seconds")


def _shorten(text: str, width: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


@dlq_app.command("list")
def dlq_list(
    hub_file: HubFile,
    event_type: TypeOption = None,
    sink: SinkOption = None,
    pipeline: PipelineOption = None,
    error: ErrorOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    status: Annotated[
        str,
        typer.Option(help="open, redriving, redriven, discarded, parked or all."),
    ] = "open",
    limit: Annotated[
        int, typer.Option(help="Maximum number of rows shown, oldest first.")
    ] = 1000,
) -> None:
    """List dead letters, oldest first."""
    from plantbus.state.store import DEAD_LETTER_STATUSES

    if status != "all" and status not in DEAD_LETTER_STATUSES:
        _print_error(
            f"Option `--status` is {status!r}: expected one of "
            f"{', '.join(DEAD_LETTER_STATUSES)} or all."
        )
        raise typer.Exit(2)
    where = _letter_filter(None, event_type, sink, pipeline, error, since, until)
    where.status = None if status == "all" else status

    letters: list[DeadLetter] = _run_admin(
        hub_file,
        "list dead letters",
        lambda admin: admin.dead_letters(where, limit=limit),
    )
    if not letters:
        console.print(
            f"No {'' if status == 'all' else status + ' '}dead letters match."
        )
        return
    table = Table(
        Column("id", justify="right"),
        Column("created", no_wrap=True),
        "status",
        Column("stage", no_wrap=True),
        Column("event type", no_wrap=True),
        Column("event id or file", no_wrap=True),
        "error",
    )
    for letter in letters:
        table.add_row(
            str(letter.id),
            datetime.fromtimestamp(letter.created_at).strftime("%Y-%m-%d %H:%M:%S"),
            str(letter.details.get("status")),
            letter.stage,
            letter.event_type or "",
            letter.event_id or str(letter.details.get("file", "")),
            _shorten(letter.error, _ERROR_WIDTH),
        )
    # Rows that wrap are hard to grep, so output to a pipe gets wide lines.
    wide = Console(width=None if sys.stdout.isatty() else 220)
    wide.print(table)


@dlq_app.command("show")
def dlq_show(
    hub_file: HubFile,
    letter_id: Annotated[int, typer.Argument(help="The dead letter id.")],
) -> None:
    """Show one dead letter with its attempts and payload."""
    letter: DeadLetter | None = _run_admin(
        hub_file, "show the dead letter", lambda admin: admin.dead_letter(letter_id)
    )
    if letter is None:
        _print_error(
            f"There is no dead letter {letter_id!r}; `plantbus dlq list "
            f"{hub_file} --status all` lists them all."
        )
        raise typer.Exit(1)

    fields = {
        "id": letter.id,
        "status": letter.details.get("status"),
        "created": _local_time(letter.created_at),
        "stage": letter.stage,
        "source": letter.source,
        "pipeline": letter.pipeline,
        "sink": letter.sink,
        "event type": letter.event_type,
        "event id": letter.event_id,
        "offset": letter.offset,
        "content type": letter.content_type,
        "error": letter.error,
    }
    for name, value in fields.items():
        if value is not None:
            typer.echo(f"{name + ':':14}{value}")
    details = {k: v for k, v in letter.details.items() if k != "status"}
    if details:
        typer.echo("details:")
        typer.echo(json.dumps(details, indent=2, default=str))
    if letter.headers:
        typer.echo("headers:")
        typer.echo(json.dumps(letter.headers, indent=2))
    typer.echo(f"attempts:     {len(letter.attempts)}")
    for number, attempt in enumerate(letter.attempts, start=1):
        typer.echo(f"  {number}. {_local_time(attempt.at)}  {attempt.error}")
    typer.echo(f"payload ({len(letter.payload)} bytes):")
    typer.echo(_render_payload(letter.payload))


def _render_payload(payload: bytes) -> str:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        excerpt = payload[:_HEX_EXCERPT]
        lines = [
            f"{start:08x}  {excerpt[start : start + 16].hex(' ')}"
            for start in range(0, len(excerpt), 16)
        ]
        if len(payload) > _HEX_EXCERPT:
            lines.append(f"… {len(payload) - _HEX_EXCERPT} more bytes")
        return "\n".join(lines)
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


@dlq_app.command("redrive")
def dlq_redrive(
    hub_file: HubFile,
    ids: IdsArgument = None,
    event_type: TypeOption = None,
    sink: SinkOption = None,
    pipeline: PipelineOption = None,
    error: ErrorOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    actor: ActorOption = None,
) -> None:
    """Send open dead letters through their pipeline or folder source again.

    A pipeline's dead letters go out when the pipeline next polls, within a
    second while the hub runs, else after the next start. An ingest dead letter
    of a folder source is written back into that source's inbox.
    """
    from plantbus.admin import default_actor

    where = _letter_filter(ids, event_type, sink, pipeline, error, since, until)
    operator = actor or default_actor()
    result: ActionResult = _run_admin(
        hub_file, "redrive", lambda admin: admin.redrive(where, actor=operator)
    )
    _print_result(result, "Redrive requested for")


@dlq_app.command("discard")
def dlq_discard(
    hub_file: HubFile,
    reason: Annotated[
        str, typer.Option(help="Why the dead letters need no redrive; audited.")
    ],
    ids: IdsArgument = None,
    event_type: TypeOption = None,
    sink: SinkOption = None,
    pipeline: PipelineOption = None,
    error: ErrorOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    actor: ActorOption = None,
) -> None:
    """Mark open dead letters as discarded."""
    from plantbus.admin import default_actor

    where = _letter_filter(ids, event_type, sink, pipeline, error, since, until)
    operator = actor or default_actor()
    result: ActionResult = _run_admin(
        hub_file,
        "discard",
        lambda admin: admin.discard(where, actor=operator, reason=reason),
    )
    _print_result(result, "Discarded")


def _print_result(result: ActionResult, done: str) -> None:
    if result.done:
        console.print(f"{done} dead letters {', '.join(map(str, result.done))}.")
    elif not result.rejected:
        console.print("No open dead letters match.")
    for letter_id, reason in result.rejected:
        _print_error(f"Skipped {letter_id}: {reason}.")
    if result.rejected:
        raise typer.Exit(1)


@app.command()
def replay(
    hub_file: HubFile,
    pipeline: Annotated[str, typer.Option(help="The pipeline that replays.")],
    from_offset: Annotated[
        int | None, typer.Option(help="First log offset to deliver again.")
    ] = None,
    from_time: Annotated[
        str | None,
        typer.Option(
            help="ISO 8601 time; the first record appended at or after it is "
            "delivered again. Without an offset, local time."
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Also deliver events that the idempotency ledger lists as "
            "delivered, by removing their ledger entries first.",
        ),
    ] = False,
    actor: ActorOption = None,
) -> None:
    """Move a pipeline's consumer group back so that it reads the log again.

    Without --force the ledger skips events already delivered, so only the
    events that never reached their sinks go out. The pipeline applies the
    request between two reads, within a second while the hub runs, else at
    the next start. With several workers, one of them applies it once the
    others have handed it every partition, after their records in work
    finish. Offsets start at 1.
    """
    from plantbus.admin import default_actor

    moment = _parse_time(from_time, "--from-time")
    operator = actor or default_actor()
    request_id: int = _run_admin(
        hub_file,
        "replay",
        lambda admin: admin.replay(
            pipeline,
            from_offset=from_offset,
            from_time=moment,
            force=force,
            actor=operator,
        ),
    )
    start = f"offset {from_offset}" if from_offset is not None else from_time
    console.print(
        f"Replay request {request_id} stored: pipeline {pipeline!r} reads again "
        f"from {start}{' and ignores the ledger' if force else ''} when it next "
        f"polls: within a second while the hub runs, or once one worker holds "
        f"every partition when several share it.",
        markup=False,
        highlight=False,
    )
