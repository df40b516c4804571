"""End-to-end events per second: ingest, then validate, map and an in-process sink.

Run: .venv/bin/python bench/bench_pipeline.py [--events N]

The ingest phase validates every event against its catalogue schema and
appends it in batches to the SQLite log with a durable commit per batch. The
delivery phase runs one pipeline (validate, map with seven fields, deliver to
an in-memory sink with the idempotency ledger) until the log is consumed.
Both phases run on one event loop, so one core does all the Python work.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_result  # noqa: E402

from plantbus.backbone.sqlite import SqliteLog  # noqa: E402
from plantbus.config.model import MapOptions, RetryConfig  # noqa: E402
from plantbus.connectors.memory import MemorySink  # noqa: E402
from plantbus.events.catalogue import Catalogue  # noqa: E402
from plantbus.events.envelope import Event  # noqa: E402
from plantbus.ingest import Ingestor  # noqa: E402
from plantbus.pipeline.delivery import Deliverer  # noqa: E402
from plantbus.pipeline.runtime import PipelineRuntime  # noqa: E402
from plantbus.pipeline.steps import MapStep, ValidateStep  # noqa: E402
from plantbus.state.sqlite import SqliteStateStore  # noqa: E402

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


async def measure(count: int, batch: int, keys: int, folder: Path) -> dict[str, float]:
    log = SqliteLog(folder / "log.sqlite", partitions=16)
    await log.start()
    state = SqliteStateStore(folder / "state.sqlite")
    await state.start()
    catalogue = Catalogue.load()
    ingest = Ingestor(log, catalogue)
    events = make_events(count, keys)

    started = time.perf_counter()
    for start in range(0, count, batch):
        await ingest(events[start : start + batch])
    ingest_seconds = time.perf_counter() - started

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
    started = time.perf_counter()
    task = asyncio.create_task(runtime.run())
    while len(sink.events) < count:
        await asyncio.sleep(0.005)
    deliver_seconds = time.perf_counter() - started
    stopping.set()
    await task
    await state.close()
    await log.close()
    return {
        "events": count,
        "ingest_per_second": count / ingest_seconds,
        "deliver_per_second": count / deliver_seconds,
        "end_to_end_per_second": count / (ingest_seconds + deliver_seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument(
        "--keys", type=int, default=1000, help="distinct partition keys (work orders)"
    )
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        result = asyncio.run(
            measure(options.events, options.batch, options.keys, Path(folder))
        )
    for name, value in result.items():
        print(f"{name:>24}: {value:,.0f}")
    print(
        "written to",
        write_result("pipeline", {"options": vars(options), "results": result}),
    )


if __name__ == "__main__":
    main()
