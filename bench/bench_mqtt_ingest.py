"""How fast the MQTT source appends a burst to the log, and its memory meanwhile.

Run: .venv/bin/python bench/bench_mqtt_ingest.py [--messages 20000] [--rounds 2]

For each variant a fresh mosquitto starts on a free loopback port, with a
session queue large enough for the whole burst. A child process runs an
`MqttSource` (QoS 1, persistent session, `receive_maximum` 1,000) that
appends to a SQLite log. A second child publishes `--messages` structured
CloudEvents at QoS 1 as fast as mosquitto acknowledges them, with up to
1,000 awaiting their PUBACK. The source's process reports:

- the publish time, from the publisher;
- the ingest time, from the first message's arrival at the source to the
  last event in the log, and the rate that gives;
- the growth of its resident memory over the burst, sampled every 20 ms.

The variants are MQTT 5 and MQTT 3.1.1, each with the source's bound on
waiting messages (`PausingClient`, the shipped code) and with the bound
lifted (a `max_queued` of 10^9, as the source behaved before the bound).
bench/results/mqtt_ingest.json keeps every round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_result

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
TOPIC = "bench/inspections"
VARIANTS = [
    ("5", True),
    ("5", False),
    ("3.1.1", True),
    ("3.1.1", False),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rss_kb() -> int:
    status = Path("/proc/self/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match
    return int(match.group(1))


def start_broker(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = folder / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "max_queued_messages 10000000\n"
        "max_inflight_messages 100\n"
    )
    broker = subprocess.Popen(
        [MOSQUITTO, "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return broker, port
        except OSError:
            time.sleep(0.05)
    broker.kill()
    raise RuntimeError(f"mosquitto did not listen on port {port}")


def publish(port: int, messages: int) -> None:
    """Child: publish the burst and print the time it took."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-publisher-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    pending: deque[Any] = deque()
    started = time.monotonic()
    for number in range(messages):
        event = {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "/bench/qc",
            "type": "quality.inspection.failed.v1",
            "time": "2026-03-02T06:00:00Z",
            "datacontenttype": "application/json",
            "data": {
                "inspection_id": f"INSP-{number % 64}",
                "item": "BRACKET-7",
                "characteristic": "DIM-12",
                "lot": f"L-{number:06d}",
                "quantity": {"value": "1", "unit": "u"},
            },
        }
        body = json.dumps(event).encode()
        pending.append(client.publish(f"{TOPIC}/{number % 64}", body, qos=1))
        if len(pending) >= 1000:
            pending.popleft().wait_for_publish(60)
    for info in pending:
        info.wait_for_publish(60)
    print(json.dumps({"publish_seconds": time.monotonic() - started}), flush=True)
    client.disconnect()
    client.loop_stop()


async def consume(port: int, messages: int, protocol: str, bounded: bool) -> None:
    """Child: run the source until the whole burst is in the log; print results."""
    from plantbus.backbone.sqlite import SqliteLog
    from plantbus.config.model import MqttBrokerConfig, MqttSubscriptionConfig
    from plantbus.connectors.mqtt import source as source_module
    from plantbus.connectors.mqtt.flow import PausingClient
    from plantbus.events.catalogue import Catalogue
    from plantbus.ingest import Ingestor

    if not bounded:

        class Unbounded(PausingClient):
            def __init__(self, *, max_queued: int, **options: Any) -> None:
                super().__init__(max_queued=10**9, **options)

        source_module.PausingClient = Unbounded  # type: ignore[misc]

    folder = Path(tempfile.mkdtemp(prefix="bench-mqtt-"))
    log = SqliteLog(folder / "log.sqlite", partitions=16)
    await log.start()
    ingestor = Ingestor(log, Catalogue.load())
    appended = 0
    first_at = 0.0
    done = asyncio.Event()

    async def ingest(events: Any) -> Any:
        nonlocal appended, first_at
        first_at = first_at or time.monotonic()
        result = await ingestor(events)
        appended += len(events)
        if appended >= messages:
            done.set()
        return result

    async def reject(letter: Any) -> None:
        raise AssertionError(f"dead letter: {letter.error}")

    broker = MqttBrokerConfig.model_validate(
        {"port": port, "protocol": protocol, "client_id": f"bench-{protocol}"}
    )
    subscription = MqttSubscriptionConfig.model_validate(
        {"filter": f"{TOPIC}/+", "qos": 1, "format": "cloudevents"}
    )
    source = source_module.MqttSource(
        "bench", broker, [subscription], client_id="bench"
    )
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(ingest, reject, stop))
    await asyncio.wait_for(source.subscribed.wait(), 10)
    await asyncio.sleep(0.5)
    before = rss_kb()
    peak = before

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_kb())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    publisher = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--child",
        "publish",
        "--port",
        str(port),
        "--messages",
        str(messages),
        stdout=subprocess.PIPE,
    )
    await asyncio.wait_for(done.wait(), 600)
    ingest_seconds = time.monotonic() - first_at
    output, _ = await publisher.communicate()
    sampler.join()
    stop.set()
    await task
    await log.close()
    shutil.rmtree(folder)
    print(
        json.dumps(
            {
                "publish_seconds": json.loads(output)["publish_seconds"],
                "ingest_seconds": ingest_seconds,
                "ingest_per_second": messages / ingest_seconds,
                "rss_growth_kb": peak - before,
            }
        ),
        flush=True,
    )


def run_variant(messages: int, protocol: str, bounded: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-mosquitto-") as folder:
        broker, port = start_broker(Path(folder))
        try:
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    "consume",
                    "--port",
                    str(port),
                    "--messages",
                    str(messages),
                    "--protocol",
                    protocol,
                    *([] if bounded else ["--unbounded"]),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
        finally:
            broker.terminate()
            broker.wait(10)
    result: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=["publish", "consume"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--protocol", default="5")
    parser.add_argument("--unbounded", action="store_true")
    args = parser.parse_args()
    if args.child == "publish":
        publish(args.port, args.messages)
        return
    if args.child == "consume":
        asyncio.run(
            consume(args.port, args.messages, args.protocol, not args.unbounded)
        )
        return

    rounds: list[dict[str, Any]] = []
    for number in range(args.rounds):
        for protocol, bounded in VARIANTS:
            result = run_variant(args.messages, protocol, bounded)
            result.update(round=number + 1, protocol=protocol, bounded=bounded)
            rounds.append(result)
            print(json.dumps(result), flush=True)

    print(
        f"\n{args.messages} QoS 1 messages, median of {args.rounds} rounds "
        f"({os.cpu_count()} CPUs)"
    )
    print("| protocol | bound | publish s | ingest s | ingested/s | RSS growth MB |")
    print("|---|---|---:|---:|---:|---:|")
    summary = []
    for protocol, bounded in VARIANTS:
        mine = [
            r for r in rounds if r["protocol"] == protocol and r["bounded"] == bounded
        ]
        row = {
            "protocol": protocol,
            "bounded": bounded,
            "publish_seconds": statistics.median(r["publish_seconds"] for r in mine),
            "ingest_seconds": statistics.median(r["ingest_seconds"] for r in mine),
            "ingest_per_second": statistics.median(
                r["ingest_per_second"] for r in mine
            ),
            "rss_growth_mb": statistics.median(r["rss_growth_kb"] for r in mine) / 1024,
        }
        summary.append(row)
        print(
            f"| {protocol} | {'pausing' if bounded else 'none'} "
            f"| {row['publish_seconds']:.1f} | {row['ingest_seconds']:.1f} "
            f"| {row['ingest_per_second']:,.0f} | {row['rss_growth_mb']:.1f} |"
        )
    path = write_result(
        "mqtt_ingest",
        {"messages": args.messages, "rounds": rounds, "summary": summary},
    )
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
