"""Measure the embedded SQLite event log against plain sqlite3 inserts.

One run measures four rates on fresh files, each with WAL, synchronous=FULL and
the same schema and connection settings as SqliteLog:

- raw: sqlite3 executemany of prebuilt rows, one commit per batch, the
  practical limit for this schema on this disk;
- append: SqliteLog.append with one batch per call, one caller;
- group: many coroutines that each append one event per call, so throughput
  comes from group commit;
- consume: consume for a group from per-partition positions and commit
  offsets per batch.

Each mode runs `--repeat` times, interleaved, because other work on the machine
changes fsync times from minute to minute. The table and the JSON file show the
median rate, the median CPU time per event (all threads of this process) and
the median of the append/raw ratios of each repeat.

    .venv/bin/python bench/bench_backbone.py --events 100000 --batch 500
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import shutil
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from plantbus.backbone import sqlite_store
from plantbus.backbone.log import partition_for
from plantbus.backbone.sqlite import SqliteLog
from plantbus.events.envelope import Event

PARTITIONS = 16
# Wall-clock seconds and CPU seconds of one measured run.
Timing = tuple[float, float]


class Stopwatch:
    """Wall-clock and process CPU time since creation."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def stop(self) -> Timing:
        """Return the wall-clock and CPU seconds since creation."""
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


RESULTS = Path(__file__).resolve().parent / "results" / "backbone.json"


def make_events(count: int) -> list[Event]:
    """Build work order progress events over 200 work orders, about 400 bytes each."""
    return [
        Event.create(
            "production.workorder.progressed.v1",
            "urn:plantbus:plant:p1:mes",
            {
                "workOrder": f"WO-{i % 200:06}",
                "operation": "0010",
                "workCenter": "WC-ASSEMBLY-3",
                "quantity": str(i % 17),
                "uom": "EA",
            },
            subject=f"WO-{i % 200:06}",
            partitionkey=f"WO-{i % 200:06}",
            plant="p1",
            correlationid=f"order-{i % 200:06}",
        )
        for i in range(count)
    ]


def fresh_path(folder: Path, name: str) -> Path:
    """Return a path for a new database file in `folder`."""
    path = folder / f"{name}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def bench_raw(events: list[Event], batch: int, folder: Path) -> Timing:
    """Insert prebuilt rows with executemany and one commit per batch."""
    path = fresh_path(folder, "raw")
    connection = sqlite_store.connect(path, busy_timeout=5.0)
    sqlite_store.create_schema(connection, path, PARTITIONS)
    now = time.time()
    rows = []
    for offset, event in enumerate(events, start=1):
        body = event.to_json()
        partition = partition_for(event.key, PARTITIONS)
        rows.append((offset, event.id, partition, event.type, now, len(body), body))

    stopwatch = Stopwatch()
    for start in range(0, len(rows), batch):
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(sqlite_store.INSERT_EVENT, rows[start : start + batch])
        connection.execute("COMMIT")
    elapsed = stopwatch.stop()
    connection.close()
    return elapsed


async def bench_append(events: list[Event], batch: int, folder: Path) -> Timing:
    """Append with SqliteLog, one batch per call, one caller at a time."""
    log = SqliteLog(fresh_path(folder, "append"), partitions=PARTITIONS)
    await log.start()

    stopwatch = Stopwatch()
    for start in range(0, len(events), batch):
        await log.append(events[start : start + batch])
    elapsed = stopwatch.stop()
    await log.close()
    return elapsed


async def bench_group(events: list[Event], concurrency: int, folder: Path) -> Timing:
    """Append one event per call from `concurrency` coroutines at once."""
    log = SqliteLog(fresh_path(folder, "group"), partitions=PARTITIONS)
    await log.start()
    queue = iter(events)

    async def producer() -> None:
        for event in queue:
            await log.append([event])

    stopwatch = Stopwatch()
    await asyncio.gather(*(producer() for _ in range(concurrency)))
    elapsed = stopwatch.stop()
    await log.close()
    return elapsed


async def bench_consume(events: list[Event], batch: int, folder: Path) -> Timing:
    """Read a full log from per-partition positions, committing after each batch."""
    path = fresh_path(folder, "consume")
    log = SqliteLog(path, partitions=PARTITIONS)
    await log.start()
    for start in range(0, len(events), 5000):
        await log.append(events[start : start + 5000])

    stopwatch = Stopwatch()
    positions = await log.committed("bench")
    seen = 0
    while True:
        records = await log.consume("bench", positions, batch)
        if not records:
            break
        for record in records:
            positions[record.partition] = record.offset
        await log.commit("bench", positions)
        seen += len(records)
    elapsed = stopwatch.stop()
    await log.close()
    if seen != len(events):
        raise RuntimeError(f"consume read {seen} records, expected {len(events)}")
    return elapsed


def median_rate(count: int, timings: list[Timing]) -> float:
    """Return events per second at the median wall-clock time."""
    return count / statistics.median(wall for wall, _ in timings)


def median_cpu_us(count: int, timings: list[Timing]) -> float:
    """Return the median CPU microseconds per event."""
    return statistics.median(cpu for _, cpu in timings) / count * 1e6


def median_ratio(timings: list[Timing], baseline: list[Timing]) -> float:
    """Return the median over repeats of rate / baseline rate."""
    return statistics.median(
        base[0] / run[0] for run, base in zip(timings, baseline, strict=True)
    )


async def run(arguments: argparse.Namespace) -> dict[str, object]:
    """Run every mode `--repeat` times, interleaved, and collect the timings."""
    events = make_events(arguments.events)
    timings: dict[str, list[Timing]] = {
        "raw": [],
        "append": [],
        "group": [],
        "consume": [],
    }
    modes: dict[str, Callable[[Path], Awaitable[Timing]]] = {
        "append": lambda folder: bench_append(events, arguments.batch, folder),
        "group": lambda folder: bench_group(events, arguments.concurrency, folder),
        "consume": lambda folder: bench_consume(events, arguments.batch, folder),
    }
    folder = Path(arguments.dir or tempfile.mkdtemp(prefix="plantbus-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return await run_modes(arguments, events, timings, modes, folder)
    finally:
        if arguments.dir is None:
            shutil.rmtree(folder, ignore_errors=True)


async def run_modes(
    arguments: argparse.Namespace,
    events: list[Event],
    timings: dict[str, list[Timing]],
    modes: dict[str, Callable[[Path], Awaitable[Timing]]],
    folder: Path,
) -> dict[str, object]:
    """Run the modes interleaved and summarise the median rates."""
    load_before = os.getloadavg()
    for _ in range(arguments.repeat):
        timings["raw"].append(bench_raw(events, arguments.batch, folder))
        for name, mode in modes.items():
            timings[name].append(await mode(folder))

    rates = {name: median_rate(arguments.events, t) for name, t in timings.items()}
    return {
        "benchmark": "backbone",
        "plantbus_version": importlib.metadata.version("plantbus"),
        "python_version": platform.python_version(),
        "sqlite_version": sqlite3.sqlite_version,
        "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "database_folder": str(folder),
        # Other work on the machine slows fsync and steals CPU; the 1-minute
        # load average before and after the run shows how busy it was.
        "load_average_1min": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "parameters": {
            "events": arguments.events,
            "batch": arguments.batch,
            "concurrency": arguments.concurrency,
            "repeat": arguments.repeat,
            "partitions": PARTITIONS,
            "body_bytes": len(events[0].to_json()),
        },
        "events_per_second": {name: round(rate) for name, rate in rates.items()},
        "cpu_us_per_event": {
            name: round(median_cpu_us(arguments.events, t), 1)
            for name, t in timings.items()
        },
        "seconds": {
            name: [round(wall, 3) for wall, _ in t] for name, t in timings.items()
        },
        "cpu_seconds": {
            name: [round(cpu, 3) for _, cpu in t] for name, t in timings.items()
        },
        # Medians of the per-repeat ratios; raw and the mode ran back to back,
        # so each ratio saw about the same load on the machine.
        "append_to_raw": round(median_ratio(timings["append"], timings["raw"]), 3),
        "group_to_raw": round(median_ratio(timings["group"], timings["raw"]), 3),
    }


def print_table(result: dict[str, object]) -> None:
    """Print the median rates and CPU times as a table."""
    rates = result["events_per_second"]
    cpu = result["cpu_us_per_event"]
    assert isinstance(rates, dict)
    assert isinstance(cpu, dict)
    labels = {
        "raw": "raw sqlite3 executemany, commit per batch",
        "append": "SqliteLog.append, one batch per call",
        "group": "SqliteLog.append, concurrent single events",
        "consume": "SqliteLog.read + commit per batch",
    }
    print(f"{'mode':<45} {'events/s':>10} {'CPU us/event':>13}")
    for name, label in labels.items():
        print(f"{label:<45} {rates[name]:>10,} {cpu[name]:>13.1f}")
    print(f"append / raw: {result['append_to_raw']:.2f}")
    print(f"group / raw:  {result['group_to_raw']:.2f}")


def main() -> None:
    """Parse options, run the benchmark, print the table and write the JSON file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="events per mode")
    parser.add_argument("--batch", type=int, default=500, help="events per commit")
    parser.add_argument(
        "--concurrency", type=int, default=500, help="coroutines in the group mode"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each mode")
    parser.add_argument(
        "--dir", help="folder for the database files (default: a new temporary folder)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON file")
    arguments = parser.parse_args()

    result = asyncio.run(run(arguments))
    print_table(result)
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {arguments.output}")


if __name__ == "__main__":
    main()
