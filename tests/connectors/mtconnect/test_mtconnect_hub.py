"""Hub files with MTConnect and OPC UA sources, built and run by the hub."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

from mtconnect_replay import ShdrAdapter, okuma_lines
from test_mtconnect_shdr import OKUMA_EVENTS

from plantbus.config.loader import load_hub
from plantbus.connectors.mtconnect.shdr import ShdrSource
from plantbus.connectors.opcua.source import OpcUaSource
from plantbus.hub import build_hub

HUB_FILE = """
hub:
  name: shopfloor-{suffix}
  data_dir: var
api:
  enabled: false
sources:
  - kind: mtconnect
    name: okuma
    mode: shdr
    port: {port}
    devices_file: {devices}
    device: OKUMA
    machine_ids: {{OKUMA: M-OKUMA-1}}
    reconnect_initial_seconds: 0.1
  - kind: opcua
    name: press-cell
    endpoint: opc.tcp://127.0.0.1:1/
    nodes:
      - node_id: ns=2;s=Press4.Fault
        machine_id: PRESS-4
        rules:
          - {{when: true, type: maintenance.machine.down.v1}}
          - {{when: false, type: maintenance.machine.up.v1}}
sinks:
  - kind: file
    name: out
    path: out.jsonl
pipelines:
  - name: machines
    types: [production.machine.*]
    steps:
      - deliver:
          to: [out]
"""


async def test_hub_runs_shdr_to_file_sink(tmp_path: Path, samples_dir: Path) -> None:
    adapter = ShdrAdapter(okuma_lines(samples_dir))
    await adapter.start()
    devices = samples_dir / "mes" / "mtconnect_cppagent" / "Devices.xml"
    path = tmp_path / "hub.yaml"
    path.write_text(
        HUB_FILE.format(
            suffix=uuid.uuid4().hex[:8], port=adapter.port, devices=devices.resolve()
        )
    )
    hub = await build_hub(load_hub(path))
    assert isinstance(hub.sources[0], ShdrSource)
    assert isinstance(hub.sources[1], OpcUaSource)

    running = asyncio.create_task(hub.run())
    out = tmp_path / "out.jsonl"
    try:
        async with asyncio.timeout(20):
            while not out.exists() or len(out.read_text().splitlines()) < OKUMA_EVENTS:
                await asyncio.sleep(0.05)
    finally:
        hub.stop()
        await asyncio.wait_for(running, 10)
        await adapter.close()

    delivered = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(delivered) == OKUMA_EVENTS
    assert {e["data"]["machine_id"] for e in delivered} == {"M-OKUMA-1"}
    assert (
        sum(e["type"] == "production.machine.parts.counted.v1" for e in delivered) == 8
    )
