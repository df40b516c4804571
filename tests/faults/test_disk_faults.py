"""A full disk and a locked log file, with `plantbus run` as a real process.

The hub's data folder sits on a small tmpfs that the test mounts, so the disk
really fills up. Mounting needs root, which the test machines and CI have.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from plantbus.events.envelope import Event
from plantbus.sim.trytond_server import free_port

from ..e2e.test_run_service import feed_lines, start_hub, stop, wait_until_serving

HUB = """\
hub:
  name: disk-test
  data_dir: {data}
api:
  port: {port}
sources:
  - name: shopfloor
    kind: http
sinks:
  - name: feed
    kind: file
    path: {feed}
pipelines:
  - name: feed
    types: ["production.*"]
    steps:
      - deliver:
          to: [feed]
"""


def _event(number: int) -> Event:
    return Event.create(
        "production.workorder.progressed.v1",
        "/test/mes",
        {
            "work_order_id": f"WO-{number % 5}",
            "quantity": {"value": "1", "unit": "u"},
            "duration_seconds": "30",
            "operation": f"OP-{number:08d}",
        },
    )


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs and must run as root, as CI does")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=800k", "tmpfs", str(mount)], check=True
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _post(url: str, events: list[Event]) -> httpx.Response:
    body = b"[" + b",".join(e.to_json() for e in events) + b"]"
    return httpx.post(
        f"{url}/v1/events",
        content=body,
        headers={"Content-Type": "application/cloudevents-batch+json"},
        timeout=30,
    )


def _integrity(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


def test_disk_full_returns_503_then_recovers(tmp_path: Path, small_disk: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    feed = tmp_path / "feed.jsonl"
    hub_file = tmp_path / "hub.yaml"
    hub_file.write_text(HUB.format(data=small_disk, port=port, feed=feed))

    process = start_hub(hub_file)
    wait_until_serving(url, process)
    acknowledged: list[str] = []
    refusal = None
    for batch in range(200):
        events = [_event(batch * 100 + n) for n in range(100)]
        try:
            response = _post(url, events)
        except httpx.TransportError:
            break  # the hub stopped on the full disk, and its output names the cause
        if response.status_code != 202:
            refusal = response
            break
        acknowledged.extend(e.id for e in events)
    output = stop(process) if process.poll() is None else process.communicate()[0]
    output = output if isinstance(output, str) else output.decode()

    assert acknowledged, output
    # Ingest refuses with a 503, or a pipeline that cannot write its ledger
    # stops the hub with exit code 1: either way the message names the cause.
    if refusal is not None:
        assert refusal.status_code == 503, refusal.text
        assert "disk or the database is full" in refusal.json()["detail"]
        assert refusal.headers["retry-after"]
    else:
        assert process.returncode == 1, output
        assert "is full" in output
        assert "Free space on that volume" in output
        assert "Traceback" not in output
        assert "OperationalError" not in output
    assert _integrity(small_disk / "log.sqlite") == "ok"
    assert _integrity(small_disk / "state.sqlite") == "ok"

    # The cause goes away: the hub starts again, and every acknowledged event
    # reaches the sink exactly once.
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    process = start_hub(hub_file)
    wait_until_serving(url, process)
    later = [_event(100_000 + n) for n in range(10)]
    assert _post(url, later).status_code == 202
    expected = set(acknowledged) | {e.id for e in later}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ids = [line.split('"id":"')[1].split('"')[0] for line in feed_lines(feed)]
        if expected <= set(ids):
            break
        time.sleep(0.1)
    stop(process)

    ids = [line.split('"id":"')[1].split('"')[0] for line in feed_lines(feed)]
    assert expected <= set(ids)
    # The file sink has no natural key: events delivered after the last
    # ledger write that the full disk refused are written again.
    assert set(ids) == expected


def test_locked_log_returns_503_then_recovers(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    feed = tmp_path / "feed.jsonl"
    hub_file = tmp_path / "hub.yaml"
    hub_file.write_text(HUB.format(data=data, port=port, feed=feed))
    process = start_hub(hub_file)
    wait_until_serving(url, process)
    assert _post(url, [_event(1)]).status_code == 202

    # Another program (a backup tool, a curious operator) holds the write lock.
    locker = sqlite3.connect(data / "log.sqlite", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        refused = _post(url, [_event(2)])
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    accepted = _post(url, [_event(3)])
    time.sleep(1)
    output = stop(process)

    assert refused.status_code == 503, refused.text
    assert "lock" in refused.json()["detail"]
    assert accepted.status_code == 202
    assert process.returncode == 0, output
    assert _integrity(data / "log.sqlite") == "ok"
    assert len(feed_lines(feed)) == 2
