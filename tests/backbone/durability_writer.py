"""Append events to a SqliteLog forever and print each acknowledged event id.

Run by test_sqlite_durability.py as `python durability_writer.py DB PREFIX`.
Four producers append batches of 1 to 200 events concurrently, so the log sees
both large batches and group commits. An id is printed only after its append
returned.
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

from plantbus.backbone.sqlite import SqliteLog
from plantbus.events.envelope import Event


async def produce(log: SqliteLog, prefix: str, producer: int) -> None:
    """Append batches with ids PREFIX-PRODUCER-N and print each acknowledged id."""
    number = 0
    while True:
        events = []
        for _ in range(random.randint(1, 200)):
            events.append(
                Event(
                    id=f"{prefix}-{producer}-{number}",
                    source="urn:plantbus:test:durability",
                    type="production.workorder.progressed.v1",
                    data={"workOrder": f"WO-{number % 37}", "quantity": str(number)},
                    partitionkey=f"WO-{number % 37}",
                )
            )
            number += 1
        appended = await log.append(events)
        sys.stdout.write("".join(f"{a.event_id}\n" for a in appended))
        sys.stdout.flush()


async def main(path: Path, prefix: str) -> None:
    """Open the log and run the producers until the process is killed."""
    log = SqliteLog(path, partitions=4)
    await log.start()
    await asyncio.gather(*(produce(log, prefix, producer) for producer in range(4)))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
