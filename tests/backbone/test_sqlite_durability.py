"""Kill a process that appends to a SqliteLog and check what it acknowledged.

SIGKILL leaves the operating system's page cache intact, so this test checks
that acknowledged commits are complete and atomic. It cannot check that the
WAL reached the disk before a power loss; `synchronous = FULL` is meant for that.
"""

from __future__ import annotations

import collections
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from plantbus.backbone.sqlite import SqliteLog

from .contract import read_all

WRITER = Path(__file__).with_name("durability_writer.py")


def run_and_kill(path: Path, prefix: str, rng: random.Random) -> list[str]:
    """Start the writer, kill it with SIGKILL at a random moment; return acked ids."""
    process = subprocess.Popen(
        [sys.executable, str(WRITER), str(path), prefix],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lines: list[bytes] = []
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(process.stdout or []))
    reader.start()

    # Kill only after the writer is busy, at a moment the writer cannot predict.
    deadline = time.monotonic() + 10
    while not lines and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    time.sleep(rng.uniform(0.05, 0.8))
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    reader.join(timeout=10)

    stderr = process.stderr.read().decode() if process.stderr else ""
    assert process.returncode == -signal.SIGKILL, stderr
    # A line cut off by the kill may hold a partial id; keep whole lines only.
    return [line.decode().strip() for line in lines if line.endswith(b"\n")]


async def test_sqlite_durability_acknowledged_appends_survive_sigkill(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    rng = random.Random()
    acknowledged: list[str] = []

    for round_number in range(3):
        ids = run_and_kill(path, f"r{round_number}", rng)
        assert ids, f"round {round_number}: the writer acknowledged no append"
        acknowledged.extend(ids)

        with sqlite3.connect(path) as connection:
            check = connection.execute("PRAGMA integrity_check").fetchone()[0]
        connection.close()
        assert check == "ok", f"round {round_number}: {check}"

    log = SqliteLog(path, partitions=4)
    await log.start()
    records = await read_all(log)
    await log.close()

    stored = collections.Counter(record.event.id for record in records)
    missing = [event_id for event_id in acknowledged if event_id not in stored]
    repeated = [event_id for event_id, count in stored.items() if count > 1]
    offsets = [record.offset for record in records]
    assert missing == []
    assert repeated == []
    assert len(set(acknowledged)) == len(acknowledged)
    assert offsets == sorted(set(offsets))
