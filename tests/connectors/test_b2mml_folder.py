"""B2mmlFolderSink: released orders out as ProductionSchedule files."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import xmlschema

from plantbus.config import load_hub
from plantbus.connectors.b2mml_folder import B2mmlFolderSink, file_name
from plantbus.errors import ConfigError, PermanentDeliveryError, RetryableDeliveryError
from plantbus.events.envelope import Event
from plantbus.formats.b2mml import (
    MaterialLine,
    parse_b2mml,
    write_production_schedule,
)
from plantbus.formats.b2mml.orders import write_order_released
from plantbus.hub import build_hub

EVENT_ID = "0b6a3c1e-4f0d-5e62-8f71-3a9d2c4b5e10"


def _released(event_id: str = EVENT_ID, **changes: Any) -> Event:
    data: dict[str, Any] = {
        "order_id": "MO-7",
        "item": "FG-1",
        "quantity": {"value": "40", "unit": "u"},
        "plant": "P1",
        "planned_start": "2026-03-02T06:00:00Z",
        "planned_end": "2026-03-02T14:00:00Z",
    }
    data.update(changes)
    return Event(
        id=event_id,
        source="tryton://127.0.0.1/plant",
        type="production.order.released.v1",
        data=data,
        subject="MO-7",
        time="2026-03-01T18:00:00Z",
    )


async def _sink(tmp_path: Path, schema_dir: Path | None = None) -> B2mmlFolderSink:
    sink = B2mmlFolderSink("mes-orders", tmp_path / "outbox", schema_dir)
    await sink.start()
    return sink


async def test_b2mml_folder_sink_writes_valid_schedule(
    tmp_path: Path, b2mml_xsd: Path
) -> None:
    sink = await _sink(tmp_path, b2mml_xsd)
    event = _released()

    reference = await sink.deliver(event)

    assert reference == f"file:{EVENT_ID}.xml"
    written = tmp_path / "outbox" / f"{EVENT_ID}.xml"
    assert written.read_bytes() == write_order_released(event)
    schema = xmlschema.XMLSchema10(
        str(b2mml_xsd / "V0600" / "B2MML-V0600-ProductionSchedule.xsd")
    )
    assert list(schema.iter_errors(written.read_bytes())) == []


async def test_b2mml_folder_sink_redelivery_same_file(tmp_path: Path) -> None:
    sink = await _sink(tmp_path)

    await sink.deliver(_released())
    await sink.deliver(_released())
    await sink.deliver(_released(quantity={"value": "45", "unit": "u"}))

    files = sorted(p.name for p in (tmp_path / "outbox").iterdir())
    assert files == [f"{EVENT_ID}.xml"]
    content = (tmp_path / "outbox" / f"{EVENT_ID}.xml").read_bytes()
    assert b"<QuantityString>45</QuantityString>" in content


async def test_b2mml_folder_sink_odd_event_id(tmp_path: Path) -> None:
    sink = await _sink(tmp_path)

    first = await sink.deliver(_released("../orders/MO 7"))
    second = await sink.deliver(_released("../orders/MO_7"))

    files = sorted(p.name for p in (tmp_path / "outbox").iterdir())
    assert len(files) == 2
    assert first != second
    assert all(name.startswith("_orders_MO_7-") for name in files)
    assert file_name("../orders/MO 7") == file_name("../orders/MO 7")


async def test_b2mml_folder_sink_other_type_permanent(
    tmp_path: Path,
) -> None:
    sink = await _sink(tmp_path)
    event = Event(id="e-9", source="s", type="production.goods.produced.v1", data={})

    with pytest.raises(PermanentDeliveryError, match=r"only production\.order"):
        await sink.deliver(event)

    assert list((tmp_path / "outbox").iterdir()) == []


async def test_b2mml_folder_sink_folder_gone_is_retryable(tmp_path: Path) -> None:
    sink = await _sink(tmp_path)
    shutil.rmtree(tmp_path / "outbox")
    (tmp_path / "outbox").write_text("not a folder")

    with pytest.raises(RetryableDeliveryError, match=f"event '{EVENT_ID}'"):
        await sink.deliver(_released())


async def test_b2mml_folder_sink_missing_xsd_fails_start(tmp_path: Path) -> None:
    sink = B2mmlFolderSink("mes-orders", tmp_path / "outbox", tmp_path / "no-xsd")

    with pytest.raises(ConfigError, match=r"B2MML-V0600-ProductionSchedule\.xsd"):
        await sink.start()


async def test_hub_schedule_in_schedule_out(tmp_path: Path, b2mml_xsd: Path) -> None:
    hub_file = tmp_path / "hub.yaml"
    hub_file.write_text(f"""\
hub: {{data_dir: data}}
api: {{enabled: false}}
sources:
  - name: planning
    kind: folder
    path: inbox
    schema_dir: {b2mml_xsd}
    poll_seconds: 0.02
sinks:
  - name: mes-orders
    kind: b2mml_folder
    path: outbox
    schema_dir: {b2mml_xsd}
pipelines:
  - name: orders-to-mes
    steps:
      - deliver: {{to: [mes-orders]}}
""")
    inbox = tmp_path / "inbox"
    outbox = tmp_path / "outbox"
    schedule = write_production_schedule(
        order_id="MO-9",
        product=MaterialLine("FG-9", Decimal("3.5"), "kg"),
        planned_start=datetime(2026, 3, 2, 6, 0, tzinfo=UTC),
        planned_end=datetime(2026, 3, 2, 7, 0, tzinfo=UTC),
        plant="P2",
    )

    hub = await build_hub(load_hub(hub_file, environ={}))
    running = asyncio.create_task(hub.run())
    await hub.started.wait()
    try:
        (inbox / "mo-9.xml").write_bytes(schedule)
        for _ in range(200):
            if outbox.is_dir() and list(outbox.glob("*.xml")):
                break
            await asyncio.sleep(0.05)
    finally:
        hub.stop()
        await asyncio.wait_for(running, 10)

    [written] = list(outbox.glob("*.xml"))
    [released] = parse_b2mml(schedule, "mo-9.xml", b2mml_xsd)
    assert written.name == f"{released.id}.xml"
    [again] = parse_b2mml(written.read_bytes(), written.name, b2mml_xsd)
    assert again.data == released.data
