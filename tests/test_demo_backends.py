"""The demo's backbone and state choice: fresh stream and database, removed after."""

from __future__ import annotations

import io
from pathlib import Path

import nats
import psycopg
import pytest
from nats.js.errors import NotFoundError
from rich.console import Console

from plantbus.config import load_hub
from plantbus.demo_backends import DemoBackends, fresh_backends, remove_backends
from plantbus.errors import PlantbusError
from plantbus.hub import build_hub

from .backbone.nats_servers import machine_nats
from .state.conftest import SERVER_DSN

HUB = """\
hub:
  name: demo-backends
  data_dir: {data_dir}
backbone:
  partitions: 4
sinks:
  - name: out
    kind: memory
pipelines:
  - name: all
    steps:
      - deliver:
          to: [out]
"""


def _hub_file(tmp_path: Path) -> Path:
    path = tmp_path / "hub.yaml"
    path.write_text(HUB.format(data_dir=tmp_path / "data"))
    return path


async def stream_exists(url: str, stream: str) -> bool:
    """Return whether the JetStream server at `url` has a stream `stream`."""
    client = await nats.connect(url)
    try:
        await client.jetstream().stream_info(stream)
    except NotFoundError:
        return False
    finally:
        await client.close()
    return True


def database_exists(name: str) -> bool:
    """Return whether the test PostgreSQL server has a database `name`."""
    with psycopg.connect(SERVER_DSN) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
    return row is not None and row[0] == 1


async def test_backends_default_leaves_hub_file_alone(tmp_path: Path) -> None:
    config = load_hub(_hub_file(tmp_path))
    console = Console(file=io.StringIO())

    async with fresh_backends(DemoBackends(), console, keep=False) as backends:
        configured = backends.configure(config)

    assert backends.stream is None
    assert backends.database is None
    assert configured.backbone == config.backbone
    assert configured.state == config.state
    assert "embedded SQLite log" in backends.describe("data")


async def test_backends_jetstream_postgres_fresh_and_removed(tmp_path: Path) -> None:
    config = load_hub(_hub_file(tmp_path))
    console = Console(file=io.StringIO())
    chosen = DemoBackends(
        backbone="jetstream",
        state="postgres",
        nats_url=machine_nats(),
        postgres_dsn=SERVER_DSN,
    )

    async with fresh_backends(chosen, console, keep=False) as backends:
        configured = backends.configure(config)
        hub = await build_hub(configured)
        await hub.close()
        assert backends.stream is not None
        assert backends.database is not None
        assert await stream_exists(chosen.nats_url, backends.stream)
        assert database_exists(backends.database)
    async with fresh_backends(chosen, console, keep=False) as second:
        pass

    assert configured.backbone.kind == "jetstream"
    assert configured.backbone.stream == backends.stream
    assert configured.backbone.partitions == 4
    assert configured.state.kind == "postgres"
    assert configured.state.dsn is not None
    assert f"dbname={backends.database}" in configured.state.dsn
    assert chosen.stream is None
    assert second.stream != backends.stream
    assert second.database != backends.database
    assert not await stream_exists(chosen.nats_url, backends.stream)
    assert not database_exists(backends.database)


async def test_backends_keep_leaves_stream_and_database(tmp_path: Path) -> None:
    config = load_hub(_hub_file(tmp_path))
    output = io.StringIO()
    console = Console(file=output, width=200)
    chosen = DemoBackends(
        backbone="jetstream",
        state="postgres",
        nats_url=machine_nats(),
        postgres_dsn=SERVER_DSN,
    )

    async with fresh_backends(chosen, console, keep=True) as backends:
        hub = await build_hub(backends.configure(config))
        await hub.close()

    assert backends.stream is not None
    assert backends.database is not None
    try:
        assert await stream_exists(chosen.nats_url, backends.stream)
        assert database_exists(backends.database)
        assert f"nats stream rm {backends.stream}" in output.getvalue()
        assert f"DROP DATABASE {backends.database}" in output.getvalue()
    finally:
        await remove_backends(backends)
    assert not database_exists(backends.database)
    assert not await stream_exists(chosen.nats_url, backends.stream)


async def test_backends_unreachable_postgres_raises(tmp_path: Path) -> None:
    chosen = DemoBackends(
        state="postgres",
        postgres_dsn="host=127.0.0.1 port=1 user=postgres dbname=postgres "
        "connect_timeout=2",
    )

    with pytest.raises(PlantbusError, match="--postgres-dsn"):
        async with fresh_backends(chosen, Console(file=io.StringIO()), keep=False):
            pass


async def test_backends_unreachable_nats_raises(tmp_path: Path) -> None:
    chosen = DemoBackends(backbone="jetstream", nats_url="nats://127.0.0.1:1")

    with pytest.raises(PlantbusError, match="--nats-url"):
        async with fresh_backends(chosen, Console(file=io.StringIO()), keep=False):
            pass
