"""Measure the JetStream event log against raw JetStream publishing and SqliteLog.

One run measures, on fresh streams and files, with the same events:

- raw: pipelined publishes of prebuilt bodies with `Nats-Msg-Id` from the same
  Python client (nats-py `publish_async`, up to `--window` acknowledgements
  outstanding), waiting for every acknowledgement;
- append: JetStreamLog.append with one batch per call;
- consume: JetStreamLog.consume for a consumer group (through its durable
  consumers) from per-partition positions, committing offsets after each
  batch;
- sqlite_append and sqlite_consume: the same two with the embedded SqliteLog.

Each mode runs `--repeat` times, interleaved, and the table shows the median.

    .venv/bin/python bench/bench_jetstream.py --events 50000 --batch 500
    .venv/bin/python bench/bench_jetstream.py --cluster 3 --replicas 3 \
        --output bench/results/jetstream_r3.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from pathlib import Path

import nats
from bench_backbone import PARTITIONS, Stopwatch, Timing, make_events
from common import RESULTS, machine
from nats.js.errors import NotFoundError

from plantbus.backbone.jetstream import JetStreamLog
from plantbus.backbone.log import EventLog, partition_for
from plantbus.backbone.sqlite import SqliteLog
from plantbus.events.envelope import Event


async def drop_stream(url: str, stream: str) -> None:
    """Delete a benchmark stream with its consumers."""
    nc = await nats.connect(url.split(","))
    with contextlib.suppress(NotFoundError):
        await nc.jetstream().delete_stream(stream)
    await nc.close()


async def wait_for_jetstream(url: str, seconds: float = 30.0) -> None:
    """Wait until the servers accept a stream, as a new cluster does after a moment."""
    nc = await nats.connect(url.split(","))
    js = nc.jetstream()
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            await js.add_stream(name="bench-ready", subjects=["bench-ready"])
            await js.delete_stream("bench-ready")
            break
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.25)
    await nc.close()


async def bench_raw(events: list[Event], url: str, window: int) -> Timing:
    """Publish prebuilt bodies pipelined with nats-py and wait for every ack."""
    stream = f"bench-raw-{uuid.uuid4().hex[:8]}"
    nc = await nats.connect(url.split(","))
    js = nc.jetstream(publish_async_max_pending=window)
    await js.add_stream(
        name=stream, subjects=[f"{stream}.p.>"], duplicate_window=3600.0
    )
    messages = [
        (
            f"{stream}.p.{partition_for(e.key, PARTITIONS)}.{e.type}",
            e.to_json(),
            {"Nats-Msg-Id": e.id},
        )
        for e in events
    ]

    stopwatch = Stopwatch()
    futures = [
        await js.publish_async(subject, body, headers=headers)
        for subject, body, headers in messages
    ]
    acks = await asyncio.gather(*futures)
    elapsed = stopwatch.stop()
    await nc.close()
    await drop_stream(url, stream)
    if len({ack.seq for ack in acks}) != len(events):
        raise RuntimeError("raw publishing stored fewer events than it sent")
    return elapsed


async def append_all(log: EventLog, events: list[Event], batch: int) -> Timing:
    """Append events with one call per batch."""
    stopwatch = Stopwatch()
    for start in range(0, len(events), batch):
        await log.append(events[start : start + batch])
    return stopwatch.stop()


async def consume_all(log: EventLog, count: int, batch: int) -> Timing:
    """Consume the whole log for one group, committing after each batch."""
    stopwatch = Stopwatch()
    positions = await log.committed("bench")
    seen = 0
    while records := await log.consume("bench", positions, batch):
        for record in records:
            positions[record.partition] = record.offset
        await log.commit("bench", positions)
        seen += len(records)
    elapsed = stopwatch.stop()
    if seen != count:
        raise RuntimeError(f"consume read {seen} records, expected {count}")
    return elapsed


async def bench_log(
    open_log: Callable[[], Awaitable[EventLog]],
    events: list[Event],
    batch: int,
) -> tuple[Timing, Timing]:
    """Append every event to a fresh log, then consume it; time both."""
    log = await open_log()
    appended = await append_all(log, events, batch)
    consumed = await consume_all(log, len(events), batch)
    await log.close()
    return appended, consumed


async def run(arguments: argparse.Namespace) -> dict[str, object]:
    """Run every mode `--repeat` times, interleaved, and summarise the medians."""
    events = make_events(arguments.events)
    timings: dict[str, list[Timing]] = {
        name: []
        for name in ("raw", "append", "consume", "sqlite_append", "sqlite_consume")
    }
    folder = Path(tempfile.mkdtemp(prefix="plantbus-bench-"))
    await wait_for_jetstream(arguments.url)
    load_before = os.getloadavg()
    server_version = ""
    try:
        for repeat in range(arguments.repeat):
            timings["raw"].append(
                await bench_raw(events, arguments.url, arguments.window)
            )

            stream = f"bench-log-{uuid.uuid4().hex[:8]}"

            async def open_jetstream(stream: str = stream) -> EventLog:
                log = JetStreamLog(
                    arguments.url,
                    stream,
                    PARTITIONS,
                    replicas=arguments.replicas,
                    max_in_flight=arguments.window,
                )
                await log.start()
                return log

            append, consume = await bench_log(open_jetstream, events, arguments.batch)
            timings["append"].append(append)
            timings["consume"].append(consume)
            await drop_stream(arguments.url, stream)

            path = folder / f"log-{repeat}.db"

            async def open_sqlite(path: Path = path) -> EventLog:
                log = SqliteLog(path, partitions=PARTITIONS)
                await log.start()
                return log

            append, consume = await bench_log(open_sqlite, events, arguments.batch)
            timings["sqlite_append"].append(append)
            timings["sqlite_consume"].append(consume)

        nc = await nats.connect(arguments.url.split(","))
        found = nc.connected_server_version
        server_version = f"{found.major}.{found.minor}.{found.patch}"
        await nc.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    count = arguments.events
    return {
        "machine": machine(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "nats_server": server_version,
        "nats_py": version("nats-py"),
        "load_average_1min": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "parameters": {
            "events": count,
            "batch": arguments.batch,
            "window": arguments.window,
            "replicas": arguments.replicas,
            "repeat": arguments.repeat,
            "partitions": PARTITIONS,
            "body_bytes": len(events[0].to_json()),
            "url": arguments.url,
        },
        "events_per_second": {
            name: round(count / statistics.median(wall for wall, _ in t))
            for name, t in timings.items()
        },
        "cpu_us_per_event": {
            name: round(statistics.median(cpu for _, cpu in t) / count * 1e6, 1)
            for name, t in timings.items()
        },
        "seconds": {
            name: [round(wall, 3) for wall, _ in t] for name, t in timings.items()
        },
    }


def print_table(result: dict[str, object]) -> None:
    """Print the median rates and CPU times as a table."""
    rates = result["events_per_second"]
    cpu = result["cpu_us_per_event"]
    assert isinstance(rates, dict)
    assert isinstance(cpu, dict)
    labels = {
        "raw": "raw nats-py publish_async, pipelined",
        "append": "JetStreamLog.append, one batch per call",
        "consume": "JetStreamLog.consume + commit per batch",
        "sqlite_append": "SqliteLog.append, one batch per call",
        "sqlite_consume": "SqliteLog.consume + commit per batch",
    }
    print(f"{'mode':<45} {'events/s':>10} {'CPU us/event':>13}")
    for name, label in labels.items():
        print(f"{label:<45} {rates[name]:>10,} {cpu[name]:>13.1f}")


def main() -> None:
    """Parse options, run the benchmark, print the table and write the JSON file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000, help="events per mode")
    parser.add_argument("--batch", type=int, default=500, help="events per call")
    parser.add_argument(
        "--window",
        type=int,
        default=2000,
        help="maximum publish acknowledgements outstanding at once",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each mode")
    parser.add_argument(
        "--url",
        default="nats://127.0.0.1:4222",
        help="comma-separated NATS server URLs",
    )
    parser.add_argument("--replicas", type=int, default=1, help="stream replicas")
    parser.add_argument(
        "--cluster",
        type=int,
        default=0,
        help="start a private cluster of this many nodes from the virtual "
        "environment's nats-server and use it instead of --url",
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS / "jetstream.json", help="JSON file"
    )
    arguments = parser.parse_args()

    cluster = None
    cluster_folder = None
    if arguments.cluster:
        # The test suite's helper writes the node configurations and routes.
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.backbone.nats_servers import Cluster

        cluster_folder = Path(tempfile.mkdtemp(prefix="plantbus-bench-nats-"))
        cluster = Cluster.create(cluster_folder, arguments.cluster)
        cluster.start()
        arguments.url = cluster.url
    try:
        result = asyncio.run(run(arguments))
    finally:
        if cluster is not None:
            cluster.stop()
        if cluster_folder is not None:
            shutil.rmtree(cluster_folder, ignore_errors=True)
    print_table(result)
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {arguments.output}")


if __name__ == "__main__":
    main()
