"""`plantbus run HUB.yaml` as a real process: serve, stop on SIGTERM, resume."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from plantbus.events.envelope import Event
from plantbus.sim.trytond_server import free_port

HUB = """\
hub:
  name: service-test
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


def progressed(order: str, number: int) -> Event:
    return Event.create(
        "production.workorder.progressed.v1",
        "/test/mes",
        {
            "work_order_id": order,
            "quantity": {"value": str(number), "unit": "u"},
            "duration_seconds": "30",
        },
    )


def start_hub(hub_file: Path) -> subprocess.Popen[bytes]:
    plantbus = Path(sys.executable).with_name("plantbus")
    return subprocess.Popen(
        [str(plantbus), "run", str(hub_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_until_serving(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
        try:
            if httpx.get(f"{url}/v1/health").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail("the hub did not answer /v1/health within 30 s")


def feed_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def wait_for_lines(path: Path, count: int) -> None:
    deadline = time.monotonic() + 30
    while len(feed_lines(path)) < count:
        assert time.monotonic() < deadline, f"{len(feed_lines(path))} of {count}"
        time.sleep(0.05)


def post(url: str, events: list[Event]) -> None:
    body = b"[" + b",".join(e.to_json() for e in events) + b"]"
    response = httpx.post(
        f"{url}/v1/events",
        content=body,
        headers={"Content-Type": "application/cloudevents-batch+json"},
    )
    assert response.status_code == 202, response.text


def stop(process: subprocess.Popen[bytes]) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    return output.decode()


def test_run_stops_on_sigterm_with_offsets_committed(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    hub_file = tmp_path / "hub.yaml"
    hub_file.write_text(HUB.format(port=port))
    feed = tmp_path / "data" / "feed.jsonl"

    process = start_hub(hub_file)
    wait_until_serving(url, process)
    first = [progressed(f"WO-{n % 7}", n) for n in range(200)]
    post(url, first)
    wait_for_lines(feed, 200)
    output = stop(process)

    assert process.returncode == 0, output
    assert "pipeline feed stopped; committed" in output
    with sqlite3.connect(tmp_path / "data" / "log.sqlite") as log:
        end = log.execute("SELECT max(offset) FROM events").fetchone()[0]
        committed = log.execute(
            "SELECT max(offset) FROM consumer_offsets WHERE group_name = 'feed'"
        ).fetchone()[0]
    assert committed == end

    # A restart resumes after the committed offsets: nothing is delivered twice.
    process = start_hub(hub_file)
    wait_until_serving(url, process)
    post(url, [progressed("WO-1", 1000 + n) for n in range(10)])
    post(url, first[:5])  # a client retrying old events is absorbed by the log
    wait_for_lines(feed, 210)
    time.sleep(0.5)
    output = stop(process)

    assert process.returncode == 0, output
    ids = [line.split('"id":"')[1].split('"')[0] for line in feed_lines(feed)]
    assert len(ids) == 210
    assert len(set(ids)) == 210


def test_run_rejects_bad_hub_file_before_start(tmp_path: Path) -> None:
    hub_file = tmp_path / "hub.yaml"
    hub_file.write_text("backbone:\n  partitions: -3\n")

    process = start_hub(hub_file)
    output, _ = process.communicate(timeout=30)

    assert process.returncode == 2
    assert f"{hub_file}:2" in output.decode()
    assert "backbone.partitions" in output.decode()


@pytest.mark.skipif(os.name != "posix", reason="signals are POSIX")
def test_run_stops_on_sigint(tmp_path: Path) -> None:
    port = free_port()
    hub_file = tmp_path / "hub.yaml"
    hub_file.write_text(HUB.format(port=port))
    process = start_hub(hub_file)
    wait_until_serving(f"http://127.0.0.1:{port}", process)

    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=30)

    assert process.returncode == 0, output.decode()
    assert "hub service-test stopped" in output.decode()


def test_run_refuses_data_folder_of_running_hub(tmp_path: Path) -> None:
    port = free_port()
    hub_file = tmp_path / "hub.yaml"
    hub_file.write_text(HUB.format(port=port))
    first = start_hub(hub_file)
    wait_until_serving(f"http://127.0.0.1:{port}", first)
    second_file = tmp_path / "second.yaml"
    second_file.write_text(HUB.format(port=free_port()))

    second = start_hub(second_file)
    output, _ = second.communicate(timeout=30)
    stop(first)

    assert second.returncode == 1
    assert f"process {first.pid}" in output.decode()
    assert "is running with the data folder" in output.decode()
