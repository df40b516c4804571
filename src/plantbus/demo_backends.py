"""The backbone and state store of one demo run: embedded, or JetStream and PostgreSQL.

With the defaults the demo keeps the log and the state in SQLite files in its
work folder, as in `examples/demo-plant/hub.yaml`. With `--backbone
jetstream` it uses a new stream on a NATS server, and with `--state postgres`
a new database on a PostgreSQL server. Both get a name that is unique to the
run, so runs never read each other's events, ledger or partition leases. The
stream, its offsets bucket and the database are removed after the run, unless
the run keeps the hub running for inspection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

import nats
import psycopg
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError
from psycopg import sql
from rich.console import Console

from plantbus.config.model import BackboneConfig, HubConfig, StateConfig
from plantbus.errors import PlantbusError
from plantbus.state.postgres import describe_dsn

logger = logging.getLogger("plantbus.demo")

BackboneKind = Literal["embedded", "jetstream"]
StateKind = Literal["sqlite", "postgres"]

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
# A maintenance database of the server: the demo connects there only to
# create and drop its own database.
DEFAULT_POSTGRES_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


@dataclass
class DemoBackends:
    """Event log and state store of one demo run."""

    backbone: BackboneKind = "embedded"
    state: StateKind = "sqlite"
    nats_url: str = DEFAULT_NATS_URL
    postgres_dsn: str = DEFAULT_POSTGRES_DSN
    # Stream (also the subject prefix) and database of this run, when used.
    stream: str | None = None
    database: str | None = None

    def configure(self, config: HubConfig) -> HubConfig:
        """Return the hub file with this run's backbone and state store in place."""
        backbone = config.backbone
        if self.stream is not None:
            backbone = BackboneConfig.model_validate(
                {
                    **config.backbone.model_dump(),
                    "kind": "jetstream",
                    "url": self.nats_url,
                    "stream": self.stream,
                }
            )
        state = config.state
        if self.database is not None:
            state = StateConfig(
                kind="postgres",
                dsn=psycopg.conninfo.make_conninfo(
                    self.postgres_dsn, dbname=self.database
                ),
            )
        return config.model_copy(update={"backbone": backbone, "state": state})

    def describe(self, data_dir: str) -> str:
        """Return one line that names the log and the state store of this run."""
        if self.stream is not None:
            log = f"JetStream stream {self.stream!r} on {self.nats_url}"
        else:
            log = f"embedded SQLite log in {data_dir}"
        if self.database is not None:
            state = f"PostgreSQL database {self.database!r}"
        else:
            state = f"SQLite state store in {data_dir}"
        return f"Event log: {log}; state: {state}."


@contextlib.asynccontextmanager
async def fresh_backends(
    backends: DemoBackends, console: Console, *, keep: bool
) -> AsyncIterator[DemoBackends]:
    """Yield `backends` with a new stream and database named; remove both after.

    With `keep`, the stream and the database stay, and their names are
    printed, so that the hub left running can be inspected.
    """
    run = uuid.uuid4().hex[:10]
    fresh = dataclasses.replace(backends, stream=None, database=None)
    if backends.backbone == "jetstream":
        # The log creates the stream on start; this only checks the URL early.
        await _check_nats(backends.nats_url)
        fresh.stream = f"demo-{run}"
    if backends.state == "postgres":
        await asyncio.to_thread(
            _create_database, backends.postgres_dsn, f"plantbus_demo_{run}"
        )
        fresh.database = f"plantbus_demo_{run}"
    try:
        yield fresh
    finally:
        if keep:
            _print_kept(fresh, console)
        else:
            await remove_backends(fresh)


async def _check_nats(url: str) -> None:
    async def ignore(exc: Exception) -> None:
        return None

    client = Client()
    try:
        # nats-py keeps trying refused servers for its first connection, so
        # the deadline comes from wait_for.
        await asyncio.wait_for(
            client.connect(
                servers=[part.strip() for part in url.split(",")],
                allow_reconnect=False,
                error_cb=ignore,
            ),
            5.0,
        )
    except (OSError, NatsError, TimeoutError) as exc:
        await client.close()
        raise PlantbusError(
            f"Cannot connect to NATS at {url!r} within 5 s ({exc!r}). Start a NATS "
            f"server with JetStream enabled there, or pass its URL with --nats-url."
        ) from exc
    await client.close()


def _create_database(server_dsn: str, name: str) -> None:
    try:
        with psycopg.connect(server_dsn, autocommit=True, connect_timeout=10) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        raise PlantbusError(
            f"Cannot create the demo database {name!r} on the --postgres-dsn "
            f"server, {describe_dsn(server_dsn)}: {exc}. Pass the DSN of a "
            f"PostgreSQL server and a user that may create databases."
        ) from exc
    logger.info("demo database %s created", name)


async def remove_backends(backends: DemoBackends) -> None:
    """Delete the stream, its offsets bucket and the database of a run; log failures.

    Each removal is tried on its own, so one failure leaves no other leftover.
    """
    if backends.stream is not None:
        try:
            await _delete_stream(backends.nats_url, backends.stream)
        except (OSError, NatsError, TimeoutError) as exc:
            logger.error(
                "cannot delete demo stream %s and its offsets bucket: %r",
                backends.stream,
                exc,
            )
    if backends.database is not None:
        try:
            await asyncio.to_thread(
                _drop_database, backends.postgres_dsn, backends.database
            )
        except psycopg.Error as exc:
            logger.error("cannot drop demo database %s: %s", backends.database, exc)


async def _delete_stream(url: str, stream: str) -> None:
    client = await nats.connect(url.split(","), connect_timeout=5)
    try:
        jetstream = client.jetstream()
        # The stream's consumers, the consumer groups, go with it.
        with contextlib.suppress(NotFoundError):
            await jetstream.delete_stream(stream)
    finally:
        await client.close()
    logger.info("demo stream %s deleted", stream)


def _drop_database(server_dsn: str, name: str) -> None:
    with psycopg.connect(server_dsn, autocommit=True, connect_timeout=10) as admin:
        # FORCE ends sessions that a stopped hub may not have closed yet.
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)
            )
        )
    logger.info("demo database %s dropped", name)


def _print_kept(backends: DemoBackends, console: Console) -> None:
    if backends.stream is not None:
        console.print(
            f"The stream {backends.stream!r} and its consumers stay on "
            f"{backends.nats_url}; remove them with "
            f"`nats stream rm {backends.stream}`."
        )
    if backends.database is not None:
        console.print(
            f"The database {backends.database!r} stays; remove it with "
            f"DROP DATABASE {backends.database}."
        )
