"""A REST target that fails for a while, with `plantbus run` as a real process.

The target is the QMS reference server in its own process (`plantbus sim
serve qms`). The hub takes quality.inspection.failed events over HTTP and
posts each one as a nonconformance. The test switches the server's faults on
in the middle of a stream and off again, then checks the records on the
server: one per event, in log order per partition key, no dead letters.

The sink sends the event id in a header that the server ignores, so the
server does not de-duplicate: a second delivery of an event by the hub would
show as a second record. A second test sends an event that the server
rejects with 422 and checks that its key waits until the dead letter is
discarded. Set PLANTBUS_SOAK=1 for a 60 s stream with a 30 s fault.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from plantbus.events.envelope import Event
from plantbus.sim.trytond_server import free_port

pytestmark = pytest.mark.slow

PLANTBUS = Path(sys.executable).with_name("plantbus")
API_KEY = {"X-API-Key": "plantbus-key"}

HUB = """\
hub:
  name: outage-test
  data_dir: {data}
api:
  port: {port}
sources:
  - name: inspections
    kind: http
sinks:
  - name: qms
    kind: rest
    url: {target}/api/v2/nonconformances
    body:
      item: data.item
      lot: data.lot
      quantity: data.quantity
      defect_code: data.characteristic
      severity: "'major'"
      detected_at: time
      plant: "'P1'"
      description: "'Inspection ' & data.inspection_id"
      source_event_id: id
    idempotency_header: X-Plantbus-Event-Id
    auth:
      kind: api_key
      value: plantbus-key
    max_connections: {connections}
    timeout_seconds: 1
    retry:
      max_attempts: 100000
      initial_seconds: 0.05
      max_seconds: 0.5
    # The circuit stays closed, so that the retry count shows the backoff.
    circuit:
      failure_threshold: 100000
pipelines:
  - name: quality
    types: ["quality.*"]
    steps:
      - deliver:
          to: [qms]
"""


@dataclass
class Process:
    """A child process whose output goes to a file, so no pipe can fill up."""

    popen: subprocess.Popen[bytes]
    output: Path

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def stop(self) -> str:
        """Stop with SIGTERM and return the output."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return self.text()


def spawn(arguments: list[str], output: Path) -> Process:
    """Start `plantbus ARGUMENTS` with stdout and stderr in a file."""
    with output.open("wb") as sink:
        popen = subprocess.Popen(
            [str(PLANTBUS), *arguments], stdout=sink, stderr=subprocess.STDOUT
        )
    return Process(popen, output)


def wait_for_url(url: str, process: Process, timeout: float = 30) -> None:
    """Wait until GET url returns 200, failing early when the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.popen.poll() is None, process.text()
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{url} did not answer 200 within {timeout} s:\n{process.text()}")


class TargetProcess:
    """A reference server started with `plantbus sim serve` in its own process."""

    def __init__(self, system: str, folder: Path, *options: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = spawn(
            ["sim", "serve", system, "--port", str(self.port), *options],
            folder / f"{system}-{self.port}.out",
        )
        wait_for_url(f"{self.url}/_admin/stats", self.process)

    def set_faults(self, **settings: Any) -> None:
        """Replace the fault settings; no settings switches every fault off."""
        response = httpx.put(f"{self.url}/_admin/faults", json=settings, timeout=10)
        assert response.status_code == 200, response.text

    def reset(self) -> None:
        """Delete records, switch faults off and zero the counters."""
        response = httpx.post(f"{self.url}/_admin/reset", timeout=10)
        assert response.status_code in (200, 204), response.text

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/_admin/stats", timeout=10)
        assert response.status_code == 200, response.text
        stats: dict[str, Any] = response.json()
        return stats

    def records(self, path: str) -> list[dict[str, Any]]:
        """Return every record under the API path, in creation order."""
        records: list[dict[str, Any]] = []
        while True:
            response = httpx.get(
                f"{self.url}{path}",
                params={"offset": len(records), "limit": 500},
                headers=API_KEY,
                timeout=30,
            )
            assert response.status_code == 200, response.text
            page = response.json()
            records.extend(page["items"])
            if page["next"] is None:
                return records


@pytest.fixture
def qms(tmp_path: Path) -> Iterator[TargetProcess]:
    target = TargetProcess("qms", tmp_path)
    yield target
    target.process.stop()


@dataclass
class Hub:
    """A `plantbus run` process with its hub file and API URL."""

    process: Process
    url: str
    hub_file: Path
    data: Path

    def post(self, events: list[Event]) -> None:
        body = b"[" + b",".join(event.to_json() for event in events) + b"]"
        response = httpx.post(
            f"{self.url}/v1/events",
            content=body,
            headers={"Content-Type": "application/cloudevents-batch+json"},
            timeout=30,
        )
        assert response.status_code == 202, response.text

    def metric(self, name: str, **labels: str) -> float:
        """Return the sum of a metric's samples that carry these labels."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{"):
                continue
            if all(f'{label}="{value}"' in line for label, value in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def dead_letters(self) -> list[tuple[int, str, str]]:
        """Return (id, status, event id) of every dead letter in the state store."""
        with sqlite3.connect(self.data / "state.sqlite") as state:
            rows = state.execute(
                "SELECT id, status, event_id FROM dead_letters ORDER BY id"
            ).fetchall()
        return [(int(row[0]), str(row[1]), str(row[2])) for row in rows]


def start_hub(folder: Path, target: str, connections: int = 8) -> Hub:
    """Write a hub file that delivers to the QMS at `target` and run it."""
    port = free_port()
    data = folder / "data"
    hub_file = folder / "hub.yaml"
    hub_file.write_text(
        HUB.format(data=data, port=port, target=target, connections=connections)
    )
    url = f"http://127.0.0.1:{port}"
    process = spawn(["run", str(hub_file)], folder / "hub.out")
    wait_for_url(f"{url}/v1/health", process)
    return Hub(process, url, hub_file, data)


def inspection_failed(key: int, number: int, characteristic: str = "DIM-12") -> Event:
    """Return a failed inspection whose `lot` carries its number in the stream."""
    return Event.create(
        "quality.inspection.failed.v1",
        "/test/qc",
        {
            "inspection_id": f"INSP-{key}",
            "item": "BRACKET-7",
            "characteristic": characteristic,
            "lot": f"L-{number:06d}",
            "quantity": {"value": "1", "unit": "u"},
        },
    )


def wait_for_records(target: TargetProcess, count: int, hub: Hub) -> None:
    """Wait until the server has `count` nonconformances, at most 60 s."""
    deadline = time.monotonic() + 60
    while True:
        records = target.stats()["records"]["nonconformance"]
        if records >= count:
            return
        assert hub.process.popen.poll() is None, hub.process.text()
        assert time.monotonic() < deadline, (
            f"{records} of {count} records after 60 s:\n{hub.process.text()[-3000:]}"
        )
        time.sleep(0.1)


def lots_by_key(records: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Return the lots of each inspection's records, in creation order."""
    lots: dict[str, list[str]] = defaultdict(list)
    for record in records:
        lots[record["description"].removeprefix("Inspection ")].append(record["lot"])
    return lots


# Fault settings of each kind, as PUT /_admin/faults takes them.
FAULTS = {
    "http_500": {"error_share": 1.0},
    "hang": {"hang_share": 1.0},
    "throttle_429": {"throttle_share": 1.0, "retry_after_seconds": 1},
}
KEYS = 8
# Set PLANTBUS_SOAK=1 for a longer stream and a longer fault.
SOAK = os.environ.get("PLANTBUS_SOAK") == "1"
STREAM_SECONDS = 60.0 if SOAK else 6.0
FAULT_FROM, FAULT_UNTIL = (10.0, 40.0) if SOAK else (1.5, 4.5)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_rest_outage_delivers_everything_once_after_recovery(
    tmp_path: Path, qms: TargetProcess, fault: str
) -> None:
    hub = start_hub(tmp_path, qms.url)
    sent: list[Event] = []
    fault_started = fault_ended = 0.0
    start = time.monotonic()
    try:
        # Ten events every 0.1 s over eight keys; the fault is on in the middle.
        while (elapsed := time.monotonic() - start) < STREAM_SECONDS:
            if not fault_started and elapsed >= FAULT_FROM:
                qms.set_faults(**FAULTS[fault])
                fault_started = time.monotonic()
            if fault_started and not fault_ended and elapsed >= FAULT_UNTIL:
                qms.set_faults()
                fault_ended = time.monotonic()
            numbers = range(len(sent), len(sent) + 10)
            batch = [inspection_failed(number % KEYS, number) for number in numbers]
            hub.post(batch)
            sent.extend(batch)
            time.sleep(0.1)
        wait_for_records(qms, len(sent), hub)
        # A late second delivery would still show up: wait a little longer.
        time.sleep(1.0)
        retried = hub.metric(
            "plantbus_deliveries_total",
            pipeline="quality",
            sink="qms",
            outcome="retried",
        )
        dead = hub.metric("plantbus_deliveries_total", outcome="dead")
    finally:
        output = hub.process.stop()

    records = qms.records("/api/v2/nonconformances")
    print(
        f"{fault}: {len(sent)} events, fault on {fault_ended - fault_started:.1f} s, "
        f"{retried:.0f} retries counted by the hub"
    )
    ids = [record["source_event_id"] for record in records]
    assert hub.process.popen.returncode == 0, output
    assert len(ids) == len(sent)
    assert set(ids) == {event.id for event in sent}
    assert len(set(ids)) == len(ids), "an event was delivered twice"
    for key, lots in lots_by_key(records).items():
        assert lots == sorted(lots), f"records of {key} are out of log order"
    assert len(lots_by_key(records)) == KEYS
    assert hub.dead_letters() == []
    assert dead == 0
    # The fault hit deliveries in work, and the hub retried them.
    assert retried > 0
    if fault == "throttle_429":
        # Retry-After: 1 delays each key's retry by a second, so each of
        # the at most KEYS events in work fails about once per second of the
        # storm. Retries that ignored it would come every 0.05 to 0.5 s.
        storm = fault_ended - fault_started
        assert retried <= KEYS * (storm + 2), (retried, storm)


def test_rest_poison_event_parks_its_key_until_discarded(
    tmp_path: Path, qms: TargetProcess
) -> None:
    hub = start_hub(tmp_path, qms.url)
    keys, per_key = 4, 10
    events = [inspection_failed(n % keys, n) for n in range(keys * per_key)]
    # The third event of INSP-1 has a defect code that the QMS rejects with 422.
    poison_index = 2 * keys + 1
    events[poison_index] = inspection_failed(1, poison_index, characteristic="bad")
    poison = events[poison_index]
    later_of_key = [
        e for e in events[poison_index + 1 :] if e.data["inspection_id"] == "INSP-1"
    ]
    try:
        for start in range(0, len(events), 8):
            hub.post(events[start : start + 8])
        # Everything but the poison event and the 7 later events of its key.
        wait_for_records(qms, len(events) - 1 - len(later_of_key), hub)
        deadline = time.monotonic() + 30
        while len(hub.dead_letters()) < 1 + len(later_of_key):
            assert time.monotonic() < deadline, hub.dead_letters()
            time.sleep(0.1)
        time.sleep(0.5)
        held = hub.dead_letters()
        on_server = {
            r["source_event_id"] for r in qms.records("/api/v2/nonconformances")
        }

        blocker = held[0]
        discard = subprocess.run(
            [
                str(PLANTBUS),
                "dlq",
                "discard",
                str(hub.hub_file),
                "--reason",
                "fault test: the defect code is invalid",
                str(blocker[0]),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert discard.returncode == 0, discard.stdout + discard.stderr
        wait_for_records(qms, len(events) - 1, hub)
        time.sleep(0.5)
    finally:
        output = hub.process.stop()

    assert blocker[1:] == ("open", poison.id)
    assert [(status, event_id) for _, status, event_id in held[1:]] == [
        ("parked", e.id) for e in later_of_key
    ]
    assert poison.id not in on_server
    assert not on_server & {e.id for e in later_of_key}
    assert len(on_server) == len(events) - 1 - len(later_of_key)
    assert discard.returncode == 0, discard.stdout + discard.stderr
    assert f"Discarded dead letters {blocker[0]}." in discard.stdout

    records = qms.records("/api/v2/nonconformances")
    ids = [record["source_event_id"] for record in records]
    assert hub.process.popen.returncode == 0, output
    assert sorted(ids) == sorted(e.id for e in events if e is not poison)
    released = [
        r["source_event_id"] for r in records if r["description"].endswith("INSP-1")
    ]
    assert released == [
        e.id for e in events if e.data["inspection_id"] == "INSP-1" and e is not poison
    ]
    statuses = {status for _, status, _ in hub.dead_letters()[1:]}
    assert statuses == {"redriven"}
    assert hub.dead_letters()[0][1] == "discarded"
