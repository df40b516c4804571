"""End-to-end events per second: ingest, then validate, map and an in-process sink.

Run: .venv/bin/python bench/bench_pipeline.py [--events N]

Ingest validates every event against its catalogue schema and appends it in
batches of 500 to the SQLite log with a durable commit per batch. Delivery
runs one pipeline (validate, map with seven fields, deliver to an in-memory
sink with the idempotency ledger). The benchmark times ingest alone, delivery
of a full log alone, and then both at once on a fresh log (end to end: from
the first append until the sink holds the last event). Everything runs on one
event loop, so one core does the Python work; SQLite's own threads may use
the second core while they wait on the disk.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_result

from plantbus.backbone.sqlite import SqliteLog
from plantbus.config.model import MapOptions, RetryConfig
from plantbus.connectors.memory import MemorySink
from plantbus.events.catalogue import Catalogue
from plantbus.events.envelope import Event
from plantbus.hub import tune_garbage_collector
from plantbus.ingest import Ingestor
from plantbus.pipeline.delivery import Deliverer
from plantbus.pipeline.runtime import PipelineRuntime
from plantbus.pipeline.steps import MapStep, ValidateStep
from plantbus.state.sqlite import SqliteStateStore

MAPPING = {
    "order": "data.work_order_id",
    "item": "data.item",
    "qty": "data.quantity.value",
    "uom": "data.quantity.unit",
    "lot": "data.lot",
    "ref": '"plantbus:" & id',
    "plant": "plant",
}


def make_events(count: int, keys: int) -> list[Event]:
    return [
        Event.create(
            "production.workorder.completed.v1",
            "/bench/mes",
            {
                "work_order_id": f"WO-{n % keys}",
                "item": f"FG-{n % 7}",
                "quantity": {"value": f"{n % 50}.5", "unit": "u"},
                "completed_at": "2026-12-01T06:00:00Z",
                "lot": f"L-{n}",
            },
            plant="P1",
        )
        for n in range(count)
    ]


async def open_stores(folder: Path) -> tuple[SqliteLog, SqliteStateStore]:
    folder.mkdir(parents=True, exist_ok=True)
    log = SqliteLog(folder / "log.sqlite", partitions=16)
    await log.start()
    state = SqliteStateStore(folder / "state.sqlite")
    await state.start()
    return log, state


def make_pipeline(
    log: SqliteLog, state: SqliteStateStore, catalogue: Catalogue
) -> tuple[PipelineRuntime, MemorySink]:
    sink = MemorySink("memory")
    stopping = asyncio.Event()
    deliverer = Deliverer(
        "bench", {"memory": sink}, ["memory"], state, RetryConfig(), stopping
    )
    runtime = PipelineRuntime(
        "bench",
        log,
        state,
        ["production.*"],
        [
            ValidateStep(catalogue, allow_unknown_types=False),
            MapStep(MapOptions(fields=MAPPING)),
        ],
        deliverer,
        max_in_flight=5000,
        concurrency=256,
    )
    return runtime, sink


async def ingest_all(ingest: Ingestor, events: list[Event], batch: int) -> None:
    for start in range(0, len(events), batch):
        await ingest(events[start : start + batch])


async def wait_for(sink: MemorySink, count: int) -> None:
    while len(sink.events) < count:
        await asyncio.sleep(0.002)


async def measure(
    count: int, batch: int, keys: int, producers: int, folder: Path
) -> dict[str, float]:
    """Time ingest alone, delivery alone, then both at once on a fresh log."""
    catalogue = Catalogue.load()

    # Phase 1 and 2: ingest into an empty log, then consume the full log.
    log, state = await open_stores(folder / "phases")
    events = make_events(count, keys)
    # The events stand in for input that arrives over the network; a hub never
    # holds them all. Freezing keeps the garbage collector from scanning them.
    gc.freeze()
    started = time.perf_counter()
    await ingest_all(Ingestor(log, catalogue), events, batch)
    ingest_seconds = time.perf_counter() - started
    del events
    gc.unfreeze()
    gc.collect()

    runtime, sink = make_pipeline(log, state, catalogue)
    started = time.perf_counter()
    task = asyncio.create_task(runtime.run())
    await wait_for(sink, count)
    deliver_seconds = time.perf_counter() - started
    runtime.stopping.set()
    await task
    await state.close()
    await log.close()

    # Phase 3: several sources append while the pipeline delivers, as in a
    # running hub with a few HTTP clients.
    log, state = await open_stores(folder / "concurrent")
    events = make_events(count, keys)
    gc.freeze()
    runtime, sink = make_pipeline(log, state, catalogue)
    task = asyncio.create_task(runtime.run())
    ingest = Ingestor(log, catalogue)
    share = -(-count // producers)
    started = time.perf_counter()
    await asyncio.gather(
        *(
            ingest_all(ingest, events[start : start + share], batch)
            for start in range(0, count, share)
        )
    )
    await wait_for(sink, count)
    concurrent_seconds = time.perf_counter() - started
    runtime.stopping.set()
    await task
    await state.close()
    await log.close()

    return {
        "events": count,
        "ingest_per_second": count / ingest_seconds,
        "deliver_per_second": count / deliver_seconds,
        "end_to_end_per_second": count / concurrent_seconds,
    }


def main() -> None:
    # The same collector settings as `plantbus run`.
    tune_garbage_collector()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument(
        "--producers",
        type=int,
        default=4,
        help="sources appending at the same time in the end-to-end phase",
    )
    parser.add_argument(
        "--keys", type=int, default=1000, help="distinct partition keys (work orders)"
    )
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        result = asyncio.run(
            measure(
                options.events,
                options.batch,
                options.keys,
                options.producers,
                Path(folder),
            )
        )
    for name, value in result.items():
        print(f"{name:>24}: {value:,.0f}")
    print(
        "written to",
        write_result("pipeline", {"options": vars(options), "results": result}),
    )


if __name__ == "__main__":
    main()
