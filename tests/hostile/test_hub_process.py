"""`plantbus run` under abuse: clients that hang up, and `kill -9` mid-stream."""

from __future__ import annotations

import json
import random
import signal
import socket
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from plantbus.sim.trytond_server import free_port

HUB = """\
hub:
  name: hostile
  data_dir: data
api:
  port: {port}
sources:
  - name: shopfloor
    kind: http
sinks:
  - name: feed
    kind: file
    path: data/feed.jsonl
pipelines:
  - name: feed
    types: ["production.*"]
    steps:
      - validate: {{}}
      - deliver:
          to: [feed]
"""


class Hub:
    """One `plantbus run` process on a hub file in a folder, with its output file."""

    def __init__(self, plantbus_command: Path, folder: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.folder = folder
        self.command = plantbus_command
        (folder / "hub.yaml").write_text(HUB.format(port=self.port))
        self.output = folder / "hub.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.output.open("ab") as output:
            self.process = subprocess.Popen(
                [str(self.command), "run", "hub.yaml"],
                cwd=self.folder,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output.read_text()
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        pytest.fail("the hub did not answer /v1/health within 30 s")

    def kill(self, sig: signal.Signals) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(timeout=60)

    def feed_ids(self) -> Counter[str]:
        feed = self.folder / "data" / "feed.jsonl"
        if not feed.exists():
            return Counter()
        return Counter(json.loads(line)["id"] for line in feed.read_text().splitlines())

    def log_ids(self) -> set[str]:
        with sqlite3.connect(self.folder / "data" / "log.sqlite") as log:
            return {row[0] for row in log.execute("SELECT event_id FROM events")}


@pytest.fixture
def hub(plantbus_command: Path, tmp_path: Path) -> Iterator[Hub]:
    running = Hub(plantbus_command, tmp_path)
    yield running
    if running.process is not None and running.process.poll() is None:
        running.kill(signal.SIGKILL)


def progressed(number: int) -> dict[str, object]:
    return {
        "specversion": "1.0",
        "id": f"hostile-{number}",
        "source": "/hostile/mes",
        "type": "production.workorder.progressed.v1",
        "data": {
            "work_order_id": f"WO-{number % 37}",
            "quantity": {"value": str(number), "unit": "u"},
            "duration_seconds": "1",
        },
    }


def test_run_ignores_client_that_hangs_up_mid_body(hub: Hub) -> None:
    hub.start()
    with socket.create_connection(("127.0.0.1", hub.port)) as connection:
        connection.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: hub\r\n"
            b"Content-Type: application/cloudevents+json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        time.sleep(0.2)
    time.sleep(0.5)
    code = hub.kill(signal.SIGTERM)

    output = hub.output.read_text()
    assert code == 0, output
    assert "500 Internal Server Error" not in output
    assert "Traceback" not in output


@pytest.mark.slow
def test_run_keeps_acknowledged_events_across_kill_9(hub: Hub) -> None:
    rng = random.Random(7)
    total = 1500
    acknowledged: set[str] = set()
    hub.start()
    kills = 0
    next_kill = time.monotonic() + rng.uniform(0.3, 1.0)
    sent = 0
    with httpx.Client(timeout=10) as client:
        while sent < total:
            if kills < 3 and time.monotonic() > next_kill:
                hub.kill(signal.SIGKILL)
                kills += 1
                hub.start()
                next_kill = time.monotonic() + rng.uniform(0.3, 1.0)
            batch = [progressed(n) for n in range(sent, min(sent + 10, total))]
            try:
                response = client.post(
                    f"{hub.url}/events",
                    content=json.dumps(batch),
                    headers={"Content-Type": "application/cloudevents-batch+json"},
                )
            except httpx.TransportError:
                continue  # the hub is down; send the same batch again
            assert response.status_code == 202, response.text
            acknowledged.update(event["id"] for event in response.json()["events"])
            sent += len(batch)

    deadline = time.monotonic() + 60
    while not acknowledged <= set(hub.feed_ids()) and time.monotonic() < deadline:
        time.sleep(0.2)
    code = hub.kill(signal.SIGTERM)

    assert kills == 3
    assert code == 0
    assert acknowledged - hub.log_ids() == set()
    assert acknowledged - set(hub.feed_ids()) == set()
