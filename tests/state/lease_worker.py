"""A worker process for the lease tests: hold partition leases and report them.

Usage: python lease_worker.py DSN HUB PARTITIONS

It prints one JSON line with its pid and held partitions whenever they change,
and hands back partitions marked for release at once, as a drained pipeline
would. It runs until it is killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from plantbus.state.leases import PartitionLeases


async def main(dsn: str, hub: str, partitions: int) -> None:
    leases = PartitionLeases(dsn, hub, partitions, interval=0.2)
    group = leases.group("erp-postings")
    await leases.start()
    reported: list[int] | None = None
    while leases.failure is None:
        if group.to_release():
            await group.release(sorted(group.to_release()))
        held = sorted(group.owned)
        if held != reported:
            print(json.dumps({"pid": os.getpid(), "owned": held}), flush=True)
            reported = held
        await asyncio.sleep(0.05)
    raise leases.failure


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
