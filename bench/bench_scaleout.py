"""Throughput and delivery latency: embedded hub, one JetStream worker, three workers.

Run: .venv/bin/python bench/bench_scaleout.py [--events 6000] [--paced 1500]

One run measures four setups with the same events and the same sink:

- embedded: one process with the embedded SQLite log and SQLite state. The hub
  runs in the benchmark process, which also appends the events.
- jetstream-1: JetStream log and PostgreSQL state, one `plantbus run` worker
  process. The benchmark process appends the events with JetStreamLog.
- jetstream-3: the same with three `plantbus run` workers on one hub file,
  which split the 16 partitions through their partition leases.
- raw: nats-py `publish_async` of prebuilt bodies, pipelined, from the
  benchmark process (`bench_raw` of bench_jetstream.py), as the ceiling of
  what one Python client appends to the machine's NATS server.

The sink is the REST sink posting each event to an aiohttp server in its own
child process, which records when each posting arrives. The worker hub file
has no sources, so the benchmark process is the only producer.

Each hub setup has two phases on a fresh stream, database or folder:

- burst: `--events` events appended at once in batches of 500. Throughput is
  the event count divided by the time from the first append to the arrival of
  the last posting at the server.
- paced: `--paced` events at `--rate` events/s in batches of 10, a load below
  every setup's throughput. p50 and p99 are the `latency` of the state
  store's deliveries: seconds from the append to the log until the sink had
  the server's response.

While each phase runs, the benchmark samples /proc/stat, so the result shows
how busy the CPUs were.

The hub file sets no retention age, so no worker trims the stream during a
run. The first runs needed this, because JetStreamLog.trim by age then purged
every record of a fresh stream on nats-server 2.9.10. That bug is fixed, and
the setting still matches the recorded runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
import nats
import psycopg
from aiohttp import web
from bench_jetstream import bench_raw, drop_stream
from bench_rest_client import free_port, wait_for_server
from common import RESULTS, machine
from psycopg import sql

from plantbus.backbone.jetstream import JetStreamLog
from plantbus.config import load_hub
from plantbus.events.envelope import Event
from plantbus.hub import build_hub, tune_garbage_collector
from plantbus.state.leases import lock_class
from plantbus.state.postgres import PostgresStateStore
from plantbus.state.store import Delivery, StateStore

PARTITIONS = 16
KEYS = 200
BATCH = 500
PACED_BATCH = 10
SERVER_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"

HUB = """\
hub:
  name: {hub}
  data_dir: {folder}/data-${{WORKER_NAME:-solo}}
backbone:
  kind: {backbone}
  url: {nats_url}
  stream: {stream}
  partitions: {partitions}
  retention:
    max_age_hours: null
state:
{state}
sinks:
  - name: target
    kind: rest
    url: http://127.0.0.1:{port}/postings
    headers:
      X-Worker: ${{WORKER_NAME:-solo}}
pipelines:
  - name: postings
    types: ["production.*"]
    steps:
      - deliver:
          to: [target]
"""


def serve(port: int) -> None:
    """Run the target: record each posting's arrival time, respond 201 with an id."""
    arrivals: list[tuple[float, str, str]] = []

    async def post(request: web.Request) -> web.Response:
        await request.read()
        arrivals.append(
            (
                time.time(),
                request.headers.get("Idempotency-Key", ""),
                request.headers.get("X-Worker", ""),
            )
        )
        return web.json_response({"id": len(arrivals)}, status=201)

    async def stats(request: web.Request) -> web.Response:
        keys = Counter(key for _, key, _ in arrivals)
        return web.json_response(
            {
                "postings": len(arrivals),
                "events": len(keys),
                "first": min((t for t, _, _ in arrivals), default=None),
                "last": max((t for t, _, _ in arrivals), default=None),
                "by_worker": Counter(worker for _, _, worker in arrivals),
            }
        )

    async def reset(request: web.Request) -> web.Response:
        arrivals.clear()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/postings", post)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def make_events(count: int, tag: str) -> list[Event]:
    """Build work order progress events over KEYS work orders."""
    return [
        Event.create(
            "production.workorder.progressed.v1",
            f"/bench/scaleout/{tag}",
            {
                "work_order_id": f"WO-{n % KEYS:05}",
                "quantity": {"value": str(n % 17), "unit": "u"},
                "duration_seconds": "30",
            },
            partitionkey=f"WO-{n % KEYS:05}",
        )
        for n in range(count)
    ]


class CpuMeter:
    """Busy share of all CPUs between start and stop, from /proc/stat."""

    def __init__(self) -> None:
        self.busy, self.total = self._read()

    @staticmethod
    def _read() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
        # idle and iowait are the 4th and 5th fields of the "cpu" line.
        idle = fields[3] + fields[4]
        return sum(fields) - idle, sum(fields)

    def stop(self) -> float:
        """Return the busy share since start, 0 to 1 over all CPUs."""
        busy, total = self._read()
        return (busy - self.busy) / max(1, total - self.total)


@dataclass
class Target:
    """The target server's URL and its statistics."""

    url: str

    async def stats(self) -> dict[str, Any]:
        async with (
            _session() as http,
            http.get(f"{self.url}/stats") as response,
        ):
            result: dict[str, Any] = await response.json()
            return result

    async def reset(self) -> None:
        async with _session() as http, http.post(f"{self.url}/reset"):
            pass

    async def wait_for(self, events: int, seconds: float) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while True:
            stats = await self.stats()
            if stats["events"] >= events:
                return stats
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Timed out after {seconds} s: the target received "
                    f"{stats['events']} of {events} events."
                )
            await asyncio.sleep(0.05)


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()


@dataclass
class Phase:
    """Figures of one phase of one setup."""

    events: int
    seconds: float = 0.0
    append_seconds: float = 0.0
    cpu_busy: float = 0.0
    # CPU seconds of the hub processes, and of this process as the producer.
    hub_cpu_seconds: float = 0.0
    producer_cpu_seconds: float = 0.0
    postings: int = 0
    by_worker: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        cuts = (
            statistics.quantiles(self.latencies, n=100, method="inclusive")
            if len(self.latencies) >= 2
            else [float("nan")] * 99
        )
        return {
            "events": self.events,
            "events_per_second": round(self.events / self.seconds),
            "seconds": round(self.seconds, 3),
            "append_seconds": round(self.append_seconds, 3),
            "cpu_busy_share": round(self.cpu_busy, 2),
            "hub_cpu_us_per_event": round(self.hub_cpu_seconds / self.events * 1e6),
            "producer_cpu_us_per_event": round(
                self.producer_cpu_seconds / self.events * 1e6
            ),
            "postings": self.postings,
            "postings_by_worker": dict(sorted(self.by_worker.items())),
            "latency_ms": {
                "p50": round(cuts[49] * 1000, 1),
                "p99": round(cuts[98] * 1000, 1),
                "max": round(max(self.latencies, default=0.0) * 1000, 1),
            },
        }


async def append_burst(
    append: Callable[[list[Event]], Awaitable[object]], events: list[Event]
) -> float:
    """Append events in batches of BATCH as fast as they go; return seconds."""
    started = time.perf_counter()
    for start in range(0, len(events), BATCH):
        await append(events[start : start + BATCH])
    return time.perf_counter() - started


async def append_paced(
    append: Callable[[list[Event]], Awaitable[object]],
    events: list[Event],
    rate: float,
) -> float:
    """Append events in batches of PACED_BATCH at `rate` events per second."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    for start in range(0, len(events), PACED_BATCH):
        await asyncio.sleep(max(0.0, started + start / rate - loop.time()))
        await append(events[start : start + PACED_BATCH])
    return loop.time() - started


async def wait_for_deliveries(
    state: StateStore, ids: set[str], seconds: float
) -> list[Delivery]:
    """Wait until the ledger contains a delivery of every event id; return those."""
    deadline = time.monotonic() + seconds
    while True:
        found = [d for d in await state.deliveries(sink="target") if d.event_id in ids]
        if len({d.event_id for d in found}) >= len(ids):
            return found
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"Timed out after {seconds} s: the ledger contains {len(found)} of "
                f"{len(ids)} deliveries."
            )
        await asyncio.sleep(0.2)


async def run_phase(
    phase: Phase,
    send: Callable[[list[Event]], Awaitable[float]],
    state: StateStore,
    target: Target,
    hub_cpu: Callable[[], float],
    timeout: float,
    tag: str,
) -> dict[str, Any]:
    """Send one phase's events, wait until all are posted and in the ledger."""
    events = make_events(phase.events, tag)
    await target.reset()
    meter = CpuMeter()
    cpu_before, producer_before = hub_cpu(), time.process_time()
    started = time.time()
    phase.append_seconds = await send(events)
    stats = await target.wait_for(len(events), timeout)
    phase.cpu_busy = meter.stop()
    phase.hub_cpu_seconds = hub_cpu() - cpu_before
    phase.producer_cpu_seconds = time.process_time() - producer_before
    phase.seconds = stats["last"] - started
    phase.postings = stats["postings"]
    phase.by_worker = stats["by_worker"]
    ids = {event.id for event in events}
    deliveries = await wait_for_deliveries(state, ids, timeout)
    phase.latencies = [delivery.latency for delivery in deliveries]
    return phase.summary()


async def run_phases(
    append: Callable[[list[Event]], Awaitable[object]],
    state: StateStore,
    target: Target,
    hub_cpu: Callable[[], float],
    arguments: argparse.Namespace,
    tag: str,
) -> dict[str, Any]:
    """Run the burst and the paced phase through one running hub setup."""

    async def burst(events: list[Event]) -> float:
        return await append_burst(append, events)

    async def paced(events: list[Event]) -> float:
        return await append_paced(append, events, arguments.rate)

    timeout = arguments.timeout
    return {
        "burst": await run_phase(
            Phase(arguments.events),
            burst,
            state,
            target,
            hub_cpu,
            timeout,
            f"{tag}-burst",
        ),
        "paced": {
            **await run_phase(
                Phase(arguments.paced),
                paced,
                state,
                target,
                hub_cpu,
                timeout,
                f"{tag}-paced",
            ),
            "rate": arguments.rate,
        },
    }


def process_cpu_seconds(pids: list[int]) -> float:
    """Return the user and system CPU seconds that processes have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError):
            # Fields 14 and 15 (utime, stime) follow the ")" of the command name.
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / ticks


async def bench_embedded(
    arguments: argparse.Namespace, target: Target, folder: Path
) -> dict[str, Any]:
    """Run the hub in this process on the embedded log and SQLite state."""
    hub_file = folder / "embedded.yaml"
    hub_file.write_text(
        HUB.format(
            hub="bench-embedded",
            folder=folder,
            backbone="embedded",
            nats_url="nats://127.0.0.1:4222",
            stream="unused",
            partitions=PARTITIONS,
            state="  kind: sqlite",
            port=target.url.rsplit(":", 1)[1],
        )
    )
    hub = await build_hub(load_hub(hub_file))
    tune_garbage_collector()
    task = asyncio.create_task(hub.run())
    await hub.started.wait()
    try:
        # The hub and the producer share this process, so its CPU time is both.
        return await run_phases(
            hub.log.append, hub.state, target, time.process_time, arguments, "emb"
        )
    finally:
        hub.stop()
        await task


async def bench_workers(
    arguments: argparse.Namespace, target: Target, folder: Path, workers: int
) -> dict[str, Any]:
    """Run `workers` plantbus run processes on JetStream and PostgreSQL."""
    run = uuid.uuid4().hex[:10]
    stream = f"bench-scaleout-{run}"
    database = f"plantbus_bench_{run}"
    hub = f"bench-{run}"

    with psycopg.connect(SERVER_DSN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    dsn = psycopg.conninfo.make_conninfo(SERVER_DSN, dbname=database)

    hub_file = folder / f"workers-{workers}.yaml"
    hub_file.write_text(
        HUB.format(
            hub=hub,
            folder=folder,
            backbone="jetstream",
            nats_url=arguments.url,
            stream=stream,
            partitions=PARTITIONS,
            state=f'  kind: postgres\n  dsn: "{dsn}"',
            port=target.url.rsplit(":", 1)[1],
        )
    )

    # The log creates the stream, so that the workers and the producer find
    # it with the partition count in its description.
    log = JetStreamLog(arguments.url, stream, PARTITIONS)
    await log.start()
    state = PostgresStateStore(dsn)

    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes = _start_workers(hub_file, workers, folder)
        await _wait_for_leases(dsn, hub, workers, processes)
        await state.start()
        pids = [process.pid for process in processes]
        figures = await run_phases(
            log.append,
            state,
            target,
            lambda: process_cpu_seconds(pids),
            arguments,
            f"js{workers}",
        )
    finally:
        _stop_workers(processes)
        await state.close()
        await log.close()
        await drop_stream(arguments.url, stream)
        with psycopg.connect(SERVER_DSN, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(database)
                )
            )

    failed = [p.returncode for p in processes if p.returncode != 0]
    if failed:
        raise RuntimeError(
            f"Worker processes exited with {failed}; see the logs in {folder}."
        )
    return figures


def _start_workers(
    hub_file: Path, workers: int, folder: Path
) -> list[subprocess.Popen[bytes]]:
    plantbus = Path(sys.executable).with_name("plantbus")
    processes = []
    for number in range(workers):
        with (folder / f"worker-{workers}-{number}.log").open("wb") as output:
            processes.append(
                subprocess.Popen(
                    [str(plantbus), "run", str(hub_file)],
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "WORKER_NAME": f"w{number}"},
                )
            )
    return processes


def _stop_workers(processes: list[subprocess.Popen[bytes]]) -> None:
    # SIGTERM lets each worker finish its work in hand and commit.
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)


async def _wait_for_leases(
    dsn: str, hub: str, workers: int, processes: list[subprocess.Popen[bytes]]
) -> None:
    """Wait until the workers hold all partitions, each worker some of them."""
    key = lock_class(hub, "group", "postings")
    deadline = time.monotonic() + 60
    while True:
        if any(process.poll() is not None for process in processes):
            raise RuntimeError("A worker process exited at start; see its log.")
        with psycopg.connect(dsn) as connection:
            rows = connection.execute(
                "SELECT objid::bigint, pid FROM pg_locks WHERE locktype = 'advisory' "
                "AND granted AND objsubid = 2 AND classid = %s::bigint::oid",
                (key,),
            ).fetchall()
        if len(rows) == PARTITIONS and len({pid for _, pid in rows}) == workers:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{workers} workers did not split {PARTITIONS} partitions in 60 s."
            )
        await asyncio.sleep(0.1)


async def bench_raw_publish(arguments: argparse.Namespace) -> dict[str, Any]:
    """Time pipelined raw publishing of the burst's event count."""
    events = make_events(arguments.events, "raw")
    meter = CpuMeter()
    wall, cpu = await bench_raw(events, arguments.url, arguments.window)
    return {
        "burst": {
            "events": len(events),
            "events_per_second": round(len(events) / wall),
            "seconds": round(wall, 3),
            "cpu_busy_share": round(meter.stop(), 2),
            "client_cpu_us_per_event": round(cpu / len(events) * 1e6, 1),
        }
    }


async def run(arguments: argparse.Namespace, target: Target) -> dict[str, Any]:
    """Run every setup once, in a fixed order, and collect their figures."""
    folder = Path(tempfile.mkdtemp(prefix="plantbus-scaleout-"))
    load_before = os.getloadavg()[0]

    setups: dict[str, Any] = {}
    setups["embedded"] = await bench_embedded(arguments, target, folder)
    setups["jetstream-1"] = await bench_workers(arguments, target, folder, 1)
    setups["jetstream-3"] = await bench_workers(arguments, target, folder, 3)
    setups["raw"] = await bench_raw_publish(arguments)

    client = await nats.connect(arguments.url)
    found = client.connected_server_version
    await client.close()
    with psycopg.connect(SERVER_DSN) as connection:
        row = connection.execute("SHOW server_version").fetchone()

    return {
        "machine": machine(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "nats_server": f"{found.major}.{found.minor}.{found.patch}",
        "postgresql": row[0] if row else "",
        "nats_py": version("nats-py"),
        "aiohttp": version("aiohttp"),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "parameters": {
            "events": arguments.events,
            "paced": arguments.paced,
            "rate": arguments.rate,
            "batch": BATCH,
            "paced_batch": PACED_BATCH,
            "keys": KEYS,
            "partitions": PARTITIONS,
            "window": arguments.window,
            "body_bytes": len(make_events(1, "size")[0].to_json()),
        },
        "setups": setups,
    }


def print_table(result: dict[str, Any]) -> None:
    """Print throughput, latency and CPU use of every setup."""
    print(
        f"{'setup':<13}{'burst ev/s':>11}{'hub CPU us/ev':>14}{'CPU busy':>9}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'paced p50':>10}{'paced p99':>10}"
    )
    for name, figures in result["setups"].items():
        burst = figures["burst"]
        paced = figures.get("paced", {})
        latency = burst.get("latency_ms", {})
        paced_latency = paced.get("latency_ms", {})
        print(
            f"{name:<13}{burst['events_per_second']:>11,}"
            f"{burst.get('hub_cpu_us_per_event', '-'):>14}"
            f"{burst['cpu_busy_share']:>9.0%}"
            f"{latency.get('p50', '-'):>9}{latency.get('p99', '-'):>9}"
            f"{paced_latency.get('p50', '-'):>10}{paced_latency.get('p99', '-'):>10}"
        )


def main() -> None:
    """Parse options, start the target, run the setups and write the JSON file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events", type=int, default=6000, help="number of events in the burst phase"
    )
    parser.add_argument(
        "--paced", type=int, default=1500, help="number of events in the paced phase"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=300.0,
        help="paced phase rate in events per second",
    )
    parser.add_argument(
        "--window",
        type=int,
        default=2000,
        help="raw setup: maximum publish acknowledgements in flight",
    )
    parser.add_argument(
        "--url", default="nats://127.0.0.1:4222", help="NATS server URL"
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait per phase"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULTS / "scaleout.json",
        help="JSON file for the results",
    )
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.serve is not None:
        serve(arguments.serve)
        return

    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    try:
        wait_for_server(port, server)
        result = asyncio.run(run(arguments, Target(f"http://127.0.0.1:{port}")))
    finally:
        server.terminate()
        server.wait(10)
    print_table(result)
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {arguments.output}")


if __name__ == "__main__":
    main()
