"""Three `plantbus run` workers on one hub file share a pipeline; one gets kill -9.

The log is a JetStream stream on the machine's NATS server, the state and the
partition leases live in a fresh PostgreSQL database, and the sink is the REST
sink posting to a target in this test. The target honours the Idempotency-Key
header as a real API would: the first request per key creates a posting, and
a repeat gets the same response without a second posting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import nats
import pytest
from nats.js.errors import NotFoundError

from plantbus.backbone.jetstream import JetStreamLog
from plantbus.events.envelope import Event
from plantbus.sim.trytond_server import free_port
from plantbus.state.leases import lock_class

from ..backbone.nats_servers import machine_nats
from ..connectors.mqtt.mqtt_brokers import publish
from ..state.conftest import advisory_lock_holders, postgres_dsn  # noqa: F401

KEYS = 40
EVENTS_PER_KEY = 15
WORKERS = 3

HUB = """\
hub:
  name: {hub}
  data_dir: data-${{WORKER_NAME}}
backbone:
  kind: jetstream
  url: {nats_url}
  stream: {stream}
  partitions: 16
state:
  kind: postgres
  dsn: "{dsn}"
  schema_name: {schema}
sinks:
  - name: target
    kind: rest
    url: http://127.0.0.1:{port}/postings
    headers:
      X-Worker: ${{WORKER_NAME}}
    retry:
      max_attempts: 20
      initial_seconds: 0.05
      max_seconds: 0.5
pipelines:
  - name: postings
    types: ["production.*"]
    concurrency: 8
    max_in_flight: 50
    steps:
      - deliver:
          to: [target]
"""


@dataclass
class Target:
    """Postings received, in arrival order, and repeated requests by key."""

    postings: list[tuple[str, str]] = field(default_factory=list)
    repeats: list[tuple[str, str]] = field(default_factory=list)
    known: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def workers_of(self, event_id: str) -> set[str]:
        return {w for e, w in self.postings + self.repeats if e == event_id}


def _serve(target: Target) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            key = self.headers["Idempotency-Key"]
            worker = self.headers.get("X-Worker", "?")
            # A little work per posting, so the kill lands mid-stream.
            time.sleep(0.004)
            with target.lock:
                if key in target.known:
                    target.repeats.append((key, worker))
                else:
                    target.known[key] = len(target.known) + 1
                    target.postings.append((key, worker))
                number = target.known[key]
            body = json.dumps({"id": number}).encode()
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _events() -> list[Event]:
    return [
        Event.create(
            "production.workorder.progressed.v1",
            "/test/workers",
            {
                "work_order_id": f"WO-{key}",
                "quantity": {"value": str(number), "unit": "u"},
                "duration_seconds": "30",
            },
            partitionkey=f"WO-{key}",
        )
        for number in range(EVENTS_PER_KEY)
        for key in range(KEYS)
    ]


async def _append(url: str, stream: str, events: list[Event]) -> None:
    log = JetStreamLog(url, stream, partitions=16)
    await log.start()
    try:
        await log.append(events)
    finally:
        await log.close()


async def _delete_stream(url: str, stream: str) -> None:
    client = await nats.connect(url)
    with contextlib.suppress(NotFoundError):
        await client.jetstream().delete_stream(stream)
    await client.close()


@pytest.fixture
def stream() -> Iterator[str]:
    name = f"pbworkers-{uuid.uuid4().hex[:12]}"
    yield name
    asyncio.run(_delete_stream(machine_nats(), name))


def _start_worker(
    hub_file: Path, name: str, log_dir: Path, **environment: str
) -> subprocess.Popen[bytes]:
    plantbus = Path(sys.executable).with_name("plantbus")
    output = (log_dir / f"{name}.log").open("wb")
    return subprocess.Popen(
        [str(plantbus), "run", str(hub_file)],
        stdout=output,
        stderr=subprocess.STDOUT,
        env={**os.environ, "WORKER_NAME": name, **environment},
        cwd=hub_file.parent,
    )


def _wait(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds} s waiting until {what}")
        time.sleep(0.05)


def _wait_for_all_posted(target: Target, events: list[Event]) -> None:
    _wait(
        lambda: len(target.postings) == len(events),
        60,
        f"all {len(events)} events are posted",
    )
    # Time for a late repeat to show up before the checks.
    time.sleep(1.0)


def _stop(
    workers: dict[str, subprocess.Popen[bytes]], server: ThreadingHTTPServer
) -> None:
    """Stop the live workers with SIGTERM, then the target."""
    for process in workers.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in workers.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
    server.shutdown()


@pytest.mark.slow
def test_workers_share_and_survive_kill_9(
    tmp_path: Path,
    postgres_dsn: str,  # noqa: F811
    stream: str,
) -> None:
    nats_url = machine_nats()
    target = Target()
    server = _serve(target)
    hub_file = tmp_path / "hub.yaml"
    hub = f"workers-{uuid.uuid4().hex[:8]}"
    hub_file.write_text(
        HUB.format(
            hub=hub,
            nats_url=nats_url,
            stream=stream,
            dsn=postgres_dsn,
            schema=f"test_{uuid.uuid4().hex[:12]}",
            port=server.server_address[1],
        )
    )
    events = _events()
    workers = {
        f"w{n}": _start_worker(hub_file, f"w{n}", tmp_path) for n in range(WORKERS)
    }
    victim = "w0"
    partitions = lock_class(hub, "group", "postings")

    def split_between_workers() -> bool:
        holders = advisory_lock_holders(postgres_dsn, partitions)
        return len(holders) == 16 and len(set(holders.values())) == WORKERS

    try:
        # The events go in once the three workers have split the partitions,
        # so that each of them has a share to work on.
        _wait(split_between_workers, 60, "three workers hold the 16 partitions")
        asyncio.run(_append(nats_url, stream, events))
        _wait(
            lambda: (
                {w for _, w in target.postings} == set(workers)
                and len(target.postings) >= len(events) // 3
            ),
            60,
            "every worker has posted and a third of the events are in",
        )
        os.kill(workers[victim].pid, signal.SIGKILL)
        workers[victim].wait()
        _wait_for_all_posted(target, events)
    finally:
        _stop(workers, server)

    survivors = [n for n in workers if n != victim]
    assert [workers[n].returncode for n in survivors] == [0, 0]
    posted = [event_id for event_id, _ in target.postings]
    assert len(posted) == len(set(posted))
    assert set(posted) == {event.id for event in events}
    for key in {event.partitionkey for event in events}:
        sent = [e.id for e in events if e.partitionkey == key]
        key_ids = set(sent)
        order = [i for i in posted if i in key_ids]
        assert order == sent, f"key {key} was posted out of order"
    # Only events that the killed worker had sent may be sent again, by the
    # worker that took its partition over.
    for event_id, _ in target.repeats:
        assert victim in target.workers_of(event_id)
    assert {w for _, w in target.postings if w != victim} == set(survivors)


SOURCES_HUB = """\
hub:
  name: {hub}
  data_dir: data-${{WORKER_NAME}}
api:
  port: ${{API_PORT}}
backbone:
  kind: jetstream
  url: {nats_url}
  stream: {stream}
  partitions: 16
state:
  kind: postgres
  dsn: "{dsn}"
  schema_name: {schema}
sources:
  - name: api
    kind: http
  - name: shopfloor
    kind: mqtt
    broker:
      port: 1883
      reconnect_initial_seconds: 0.1
      reconnect_max_seconds: 1
    subscriptions:
      - filter: {prefix}/+
        qos: 1
        format: cloudevents
sinks:
  - name: target
    kind: rest
    url: http://127.0.0.1:{port}/postings
    headers:
      X-Worker: ${{WORKER_NAME}}
pipelines:
  - name: postings
    types: ["production.*"]
    steps:
      - deliver:
          to: [target]
"""


def _publish_all(prefix: str, events: list[Event]) -> None:
    """Publish events as structured CloudEvents, one topic per partition key."""
    messages = [(f"{prefix}/{event.partitionkey}", event.to_json()) for event in events]
    asyncio.run(publish(1883, messages))


@pytest.mark.slow
def test_workers_mqtt_source_fails_over(
    tmp_path: Path,
    postgres_dsn: str,  # noqa: F811
    stream: str,
) -> None:
    nats_url = machine_nats()
    target = Target()
    server = _serve(target)
    hub_file = tmp_path / "hub.yaml"
    prefix = f"plantbus-workers/{uuid.uuid4().hex[:12]}"
    hub_file.write_text(
        SOURCES_HUB.format(
            hub=f"sources-{uuid.uuid4().hex[:8]}",
            nats_url=nats_url,
            stream=stream,
            dsn=postgres_dsn,
            schema=f"test_{uuid.uuid4().hex[:12]}",
            port=server.server_address[1],
            prefix=prefix,
        )
    )
    events = _events()[:300]
    api_ports = {"w0": free_port(), "w1": free_port()}
    workers = {
        name: _start_worker(hub_file, name, tmp_path, API_PORT=str(port))
        for name, port in api_ports.items()
    }

    def log(name: str) -> str:
        return (tmp_path / f"{name}.log").read_text(errors="replace")

    def source_holder() -> str | None:
        running = [n for n in workers if "runs source shopfloor" in log(n)]
        return running[0] if len(running) == 1 else None

    try:
        _wait(
            lambda: (
                source_holder() is not None
                and "subscribed to" in log(source_holder() or "w0")
            ),
            60,
            "one worker runs the MQTT source",
        )
        holder = source_holder()
        assert holder is not None
        other = next(n for n in workers if n != holder)
        _wait(
            lambda: "waits for source shopfloor" in log(other),
            30,
            "the other worker waits for the source",
        )
        assert "subscribed to" not in log(other)
        # Every worker serves the HTTP source.
        for name, port in api_ports.items():
            _wait(lambda port=port: _health(port), 30, f"worker {name} serves its API")
        _publish_all(prefix, events[:100])
        _wait(lambda: len(target.postings) == 100, 60, "100 events are posted")

        os.kill(workers[holder].pid, signal.SIGKILL)
        workers[holder].wait()
        # Published while no worker is subscribed: the broker keeps them in
        # the source's persistent session.
        _publish_all(prefix, events[100:])
        _wait(
            lambda: "runs source shopfloor" in log(other),
            30,
            "the other worker takes the source over",
        )
        _wait_for_all_posted(target, events)
    finally:
        _stop(workers, server)

    assert workers[other].returncode == 0, log(other)[-3000:]
    posted = [event_id for event_id, _ in target.postings]
    assert len(posted) == len(set(posted))
    assert set(posted) == {event.id for event in events}
    assert log(other).count("subscribed to") == 1


def _health(port: int) -> bool:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2)
    except httpx.TransportError:
        return False
    return response.status_code == 200
