"""Folder sources of format csv and fixed_width, from a hub file, on a real log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from plantbus.admin import AdminService
from plantbus.config import load_hub
from plantbus.connectors.files import FolderSource
from plantbus.errors import ConfigError
from plantbus.hub import Hub, build_hub
from plantbus.state.store import DeadLetterFilter

HUB_FILE = """\
hub:
  data_dir: var
api:
  enabled: false
sources:
  - kind: folder
    name: legacy-mes
    path: inbox
    format: {format}
    plant: P1
    poll_seconds: 0.05
    layout:
{layout}
"""
CSV_LAYOUT = """\
      encoding: cp1252
      delimiter: ";"
      decimal_separator: ","
      thousands_separator: "."
      timezone: Europe/Berlin
      event_type: production.goods.produced.v1
      fields:
        work_order_id: {column: Auftrag}
        item: {column: Artikel}
        quantity: {column: Menge, type: quantity, unit: kg}
        produced_at: {column: Zeit, type: datetime, format: "%d.%m.%Y %H:%M:%S"}
"""
FIXED_LAYOUT = """\
      encoding: latin-1
      timezone: Europe/Berlin
      event_type: production.goods.produced.v1
      id_column: doc
      columns:
        - {name: doc, start: 1, width: 6}
        - {name: order, start: 7, width: 6}
        - {name: item, start: 13, width: 8}
        - {name: qty, start: 21, width: 6}
        - {name: at, start: 27, width: 12}
      fields:
        work_order_id: {column: order}
        item: {column: item}
        quantity: {column: qty, type: quantity, unit: u}
        produced_at: {column: at, type: datetime, format: "%Y%m%d%H%M"}
"""
CSV_FILE = (
    "Auftrag;Artikel;Menge;Zeit\r\n"
    "WO-1;Käse;1.250,75;02.03.2026 06:30:00\r\n"
    "WO-2;Käse;2,5;02.03.2026 25:00:00\r\n"
    "WO-3;Öl;3;02.03.2026 07:00:00\r\n"
).encode("cp1252")


async def _hub(tmp_path: Path, format: str, layout: str) -> Hub:
    path = tmp_path / "hub.yaml"
    path.write_text(HUB_FILE.format(format=format, layout=layout))
    return await build_hub(load_hub(path, environ={}))


@pytest.fixture
async def csv_hub(tmp_path: Path) -> AsyncIterator[Hub]:
    hub = await _hub(tmp_path, "csv", CSV_LAYOUT)
    try:
        yield hub
    finally:
        await hub.close()


async def _settle(hub: Hub) -> None:
    """Poll twice, so that every unchanged file counts as complete."""
    [source] = hub.sources
    assert isinstance(source, FolderSource)
    for folder in (source.done_dir, source.rejected_dir):
        folder.mkdir(exist_ok=True)
    for _ in range(2):
        await source.poll(hub.ingest, hub.reject)


async def _logged(hub: Hub) -> list[dict[str, object]]:
    records = await hub.log.read(dict.fromkeys(range(16), 0), limit=100)
    return [r.event.to_dict() for r in sorted(records, key=lambda r: r.offset)]


async def test_flatfile_source_splits_good_and_bad(
    csv_hub: Hub, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "shift.csv").write_bytes(CSV_FILE)

    await _settle(csv_hub)

    logged = await _logged(csv_hub)
    assert [e["data"] for e in logged] == [
        {
            "work_order_id": "WO-1",
            "item": "Käse",
            "quantity": {"value": "1250.75", "unit": "kg"},
            "produced_at": "2026-03-02T06:30:00+01:00",
        },
        {
            "work_order_id": "WO-3",
            "item": "Öl",
            "quantity": {"value": "3", "unit": "kg"},
            "produced_at": "2026-03-02T07:00:00+01:00",
        },
    ]
    assert {e["source"] for e in logged} == {"csv:shift.csv"}
    assert {e["plant"] for e in logged} == {"P1"}
    [letter] = await csv_hub.state.dead_letters(DeadLetterFilter())
    assert letter.stage == "ingest"
    assert letter.source == "legacy-mes"
    assert letter.content_type == "text/csv"
    assert letter.payload == (
        "Auftrag;Artikel;Menge;Zeit\r\nWO-2;Käse;2,5;02.03.2026 25:00:00\r\n"
    ).encode("cp1252")
    assert letter.details == {
        "status": "open",
        "file": "shift.csv",
        "line": 3,
        "column": "Zeit",
        "value": "02.03.2026 25:00:00",
        "rule": "expected a time in the format '%d.%m.%Y %H:%M:%S'",
        "row_offset": len(b"Auftrag;Artikel;Menge;Zeit\r\n"),
    }
    assert letter.error == (
        "Line 3 of 'shift.csv' was rejected: Zeit is '02.03.2026 25:00:00': "
        "expected a time in the format '%d.%m.%Y %H:%M:%S'."
    )
    assert (inbox / "done" / "shift.csv").read_bytes() == CSV_FILE
    assert list((inbox / "rejected").iterdir()) == []


async def test_flatfile_source_dedupes_redropped_file(
    csv_hub: Hub, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "shift.csv").write_bytes(CSV_FILE)
    await _settle(csv_hub)
    (inbox / "shift-again.csv").write_bytes(CSV_FILE)

    await _settle(csv_hub)

    assert len(await _logged(csv_hub)) == 2
    assert (inbox / "done" / "shift-again.csv").exists()


async def test_flatfile_source_redrive_same_layout(
    csv_hub: Hub, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "shift.csv").write_bytes(CSV_FILE)
    await _settle(csv_hub)
    [letter] = await csv_hub.state.dead_letters(DeadLetterFilter())
    assert letter.id is not None

    admin = AdminService(csv_hub.state, csv_hub.config)
    result = await admin.redrive(DeadLetterFilter(ids=[letter.id]), actor="test")
    await _settle(csv_hub)

    # The redriven file has the header, so its row is read as data again and
    # fails on the same cell, now on line 2.
    assert result.rejected == []
    assert (inbox / "done" / "shift.1.csv").read_bytes() == letter.payload
    [again] = await csv_hub.state.dead_letters(DeadLetterFilter())
    assert again.details["line"] == 2
    assert again.details["column"] == "Zeit"
    assert again.details["value"] == "02.03.2026 25:00:00"
    assert len(await _logged(csv_hub)) == 2


async def test_flatfile_source_rejects_unreadable_file_whole(
    csv_hub: Hub, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    data = b"Order;Item\r\nWO-1;A\r\n"
    (inbox / "other.csv").write_bytes(data)

    await _settle(csv_hub)

    assert await _logged(csv_hub) == []
    [letter] = await csv_hub.state.dead_letters(DeadLetterFilter())
    assert letter.payload == data
    assert letter.error == (
        "Document 'other.csv' was rejected: header (line 1): is missing the "
        "columns 'Artikel', 'Auftrag', 'Menge', 'Zeit'; the header names 'Order', "
        "'Item', so check the layout's column names and `delimiter` ';'"
    )
    assert (inbox / "rejected" / "other.csv").read_bytes() == data


async def test_flatfile_source_fixed_width_id_column(
    tmp_path: Path,
) -> None:
    hub = await _hub(tmp_path, "fixed_width", FIXED_LAYOUT)
    lines = [
        "D-0001WO-1  Räder   12    202603020630",
        "D-0002WO-2  Räder",
        "D-0003WO-3  Räder   4     202603020700",
    ]
    data = "\n".join(lines).encode("latin-1")
    try:
        (tmp_path / "inbox" / "export.txt").write_bytes(data)
        await _settle(hub)
        (tmp_path / "inbox" / "export-copy.txt").write_bytes(data + b"\n")
        await _settle(hub)

        logged = await _logged(hub)
        letters = await hub.state.dead_letters(DeadLetterFilter())
    finally:
        await hub.close()

    # The copy has other bytes, but the id column gives its rows the same ids.
    assert [e["data"]["work_order_id"] for e in logged] == ["WO-1", "WO-3"]  # type: ignore[index]
    assert [letter.details["line"] for letter in letters] == [2, 2]
    assert letters[0].payload == "D-0002WO-2  Räder\n".encode("latin-1")
    assert letters[0].details["column"] == "qty"
    assert letters[0].details["rule"] == "is missing; the column is required"
    assert letters[0].content_type == "text/plain"


def test_flatfile_source_config_needs_layout(tmp_path: Path) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text(
        HUB_FILE.format(format="csv", layout="").replace("    layout:\n", "")
    )

    with pytest.raises(ConfigError, match="format csv needs a `layout` block"):
        load_hub(path, environ={})


async def test_flatfile_source_build_rejects_unknown_column(tmp_path: Path) -> None:
    layout = FIXED_LAYOUT.replace("{column: item}", "{column: article}")

    with pytest.raises(ConfigError, match="reads column 'article'"):
        await _hub(tmp_path, "fixed_width", layout)
