"""Hostile EDI and flat files through a real `plantbus run` with folder sources.

The hub runs as a subprocess from a working folder other than the hub file's,
with relative paths in the hub file. Every bad file must end in `rejected/`
as a dead letter whose reason names where and why, good files in `done/`,
and each interchange's acknowledgement in the outbox beside the hub file.

Set PLANTBUS_SOAK=1 to make the flat file 100,000 rows long instead of 5,000.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from plantbus.formats.edifact import read_edifact

X12_SAMPLE = ("edi", "x12", "oopfactory_x12parser", "856_Example1.txt")
EDIFACT_SAMPLE = ("edi", "edifact", "php-edifact", "D96ADESADV.edi")
ROWS = 100_000 if os.environ.get("PLANTBUS_SOAK") else 5_000
# Every this many rows, one has a quantity that is not a number.
BAD_EVERY = 997

HUB = """\
hub: {name: hostile-edi, data_dir: data}
api: {enabled: false}
sources:
  - {name: x12, kind: folder, path: x12/in, format: x12, outbox: x12/out,
     poll_seconds: 0.1}
  - {name: edifact, kind: folder, path: edifact/in, format: edifact,
     outbox: edifact/out, poll_seconds: 0.1}
  - name: csv
    kind: folder
    path: csv/in
    format: csv
    poll_seconds: 0.1
    layout:
      encoding: cp1252
      delimiter: ";"
      decimal_separator: ","
      timezone: Europe/Berlin
      event_type: production.workorder.completed.v1
      max_rejected_rows: 100000
      fields:
        work_order_id: {column: Auftrag}
        item: {column: Artikel}
        quantity: {column: Menge, type: quantity, unit: kg}
        completed_at: {column: Ende, type: datetime, format: "%d.%m.%Y %H:%M"}
sinks:
  - {name: out, kind: file, path: data/out.jsonl}
pipelines:
  - name: feed
    types: ["none.*"]
    steps:
      - deliver: {to: [out]}
"""


def flat_file(rows: int) -> bytes:
    lines = ["Auftrag;Artikel;Menge;Ende\r\n"]
    for number in range(rows):
        quantity = "viel" if number % BAD_EVERY == 1 else f"{number},5"
        lines.append(f"WO-{number};Mutter-\xdc;{quantity};02.03.2026 14:05\r\n")
    return "".join(lines).encode("cp1252")


def hostile_files(samples_dir: Path) -> dict[str, bytes]:
    """Return the files to drop, by path under the hub folder."""
    x12 = samples_dir.joinpath(*X12_SAMPLE).read_bytes()
    edifact = samples_dir.joinpath(*EDIFACT_SAMPLE).read_bytes()
    noise = random.Random(7).randbytes(20_000)
    return {
        "x12/in/good.x12": x12,
        "x12/in/empty.x12": b"",
        "x12/in/truncated.x12": x12[:300],
        "x12/in/noise.x12": noise,
        "edifact/in/good.edi": edifact,
        "edifact/in/empty.edi": b"",
        "edifact/in/truncated.edi": edifact[:200],
        "edifact/in/noise.edi": noise,
        "edifact/in/utf16.edi": edifact.decode("latin-1").encode("utf-16"),
        # Two interchanges in one file: the second must not vanish unread.
        "edifact/in/twice.edi": edifact + edifact,
        # A 2 MB document number in BGM.
        "edifact/in/huge.edi": edifact.replace(b"BGM+351+", b"BGM+351+" + b"A" * 2**21),
        "csv/in/rows.csv": flat_file(ROWS),
        "csv/in/empty.csv": b"",
        "csv/in/noise.csv": noise,
        "csv/in/bom.csv": b"\xef\xbb\xbf" + flat_file(1),
        # 0x81 is not a cp1252 character; the row after it is UTF-8.
        "csv/in/mixed.csv": flat_file(1)
        + b"WO-X;Mutter-\x81;1,5;02.03.2026 14:05\r\n"
        + "WO-Y;Mutter-\xdc;1,5;02.03.2026 14:05\r\n".encode(),
    }


def run_hub(hub_dir: Path, files: dict[str, bytes], plantbus: Path) -> str:
    """Run the hub until every inbox is empty; return its output."""
    elsewhere = hub_dir.parent / "elsewhere"
    elsewhere.mkdir()
    output = hub_dir / "hub.log"
    with output.open("wb") as sink:
        hub = subprocess.Popen(
            [str(plantbus), "run", str(hub_dir / "hub.yaml")],
            cwd=elsewhere,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            for relative, data in files.items():
                path = hub_dir / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            deadline = time.monotonic() + (600 if ROWS > 5_000 else 60)
            inboxes = {(hub_dir / name).parent for name in files}
            while any(p.is_file() for inbox in inboxes for p in inbox.iterdir()):
                assert hub.poll() is None, output.read_text(errors="replace")
                assert time.monotonic() < deadline, "the inboxes did not drain"
                time.sleep(0.2)
        finally:
            hub.send_signal(signal.SIGTERM)
            hub.wait(30)
    assert not list(elsewhere.iterdir()), "the hub wrote into its working folder"
    return output.read_text(errors="replace")


def dead_letters(hub_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Return the stored dead letters by file name."""
    found: dict[str, list[dict[str, Any]]] = {}
    with sqlite3.connect(hub_dir / "data" / "state.sqlite") as connection:
        rows = connection.execute(
            "SELECT error, payload, details FROM dead_letters ORDER BY id"
        )
        for error, payload, details in rows:
            letter = {"error": error, "payload": payload, **json.loads(details)}
            found.setdefault(letter["file"], []).append(letter)
    return found


def test_edi_run_rejects_hostile_files(
    tmp_path: Path, samples_dir: Path, plantbus_command: Path
) -> None:
    hub_dir = tmp_path / "hub"
    hub_dir.mkdir()
    (hub_dir / "hub.yaml").write_text(HUB)
    files = hostile_files(samples_dir)

    output = run_hub(hub_dir, files, plantbus_command)
    letters = dead_letters(hub_dir)

    assert "Traceback" not in output
    for folder in ("x12", "edifact"):
        assert sorted(os.listdir(hub_dir / folder / "in" / "done")) == [
            f"good.{'x12' if folder == 'x12' else 'edi'}"
        ]
    assert sorted(os.listdir(hub_dir / "x12" / "out")) == [
        "good.997.x12",
        "truncated.ta1.x12",
    ]
    assert sorted(os.listdir(hub_dir / "edifact" / "out")) == [
        "good.contrl.edi",
        "twice.contrl.edi",
    ]
    # Each rejected file keeps its bytes and a reason that names the rule.
    for relative, data in files.items():
        name = Path(relative).name
        if name in ("good.x12", "good.edi", "rows.csv", "mixed.csv"):
            continue
        assert (hub_dir / relative).parent.joinpath("rejected", name).exists(), name
        assert letters[name][0]["payload"] == data, name
    assert "ISA segment" in letters["noise.x12"][0]["error"]
    assert "IEA trailer" in letters["truncated.x12"][0]["error"]
    assert "segment UNB at position 23" in letters["twice.edi"][0]["error"]
    assert "follows the UNZ trailer" in letters["twice.edi"][0]["error"]
    assert "asn_id" in letters["huge.edi"][0]["error"]
    assert len(letters["huge.edi"][0]["error"]) < 1000
    assert "utf-8-sig" in letters["bom.csv"][0]["error"]


def test_flatfile_run_keeps_good_rows(
    tmp_path: Path, samples_dir: Path, plantbus_command: Path
) -> None:
    hub_dir = tmp_path / "hub"
    hub_dir.mkdir()
    (hub_dir / "hub.yaml").write_text(HUB)
    files = {k: v for k, v in hostile_files(samples_dir).items() if "csv/" in k}

    run_hub(hub_dir, files, plantbus_command)
    letters = dead_letters(hub_dir)

    bad_rows = [n for n in range(ROWS) if n % BAD_EVERY == 1]
    assert [letter["line"] for letter in letters["rows.csv"]] == [
        n + 2 for n in bad_rows
    ]
    first = letters["rows.csv"][0]
    assert (first["column"], first["value"]) == ("Menge", "viel")
    row = first["payload"][first["row_offset"] :]
    assert row == b"WO-1;Mutter-\xdc;viel;02.03.2026 14:05\r\n"
    assert sorted(os.listdir(hub_dir / "csv" / "in" / "done")) == [
        "mixed.csv",
        "rows.csv",
    ]
    # The UTF-8 row is valid cp1252 too (as 'Mutter-Ãœ'), so only 0x81 shows.
    mixed = letters["mixed.csv"]
    assert [letter["line"] for letter in mixed] == [3]
    assert mixed[0]["value"] == "Mutter-\\x81"
    assert "not valid cp1252" in mixed[0]["rule"]


def test_edifact_reader_rejects_second_interchange(samples_dir: Path) -> None:
    edifact = samples_dir.joinpath(*EDIFACT_SAMPLE).read_bytes()

    outcome = read_edifact(edifact + edifact, "twice.edi", source="urn:test")

    assert outcome.events == []
    assert len(outcome.rejections) == 1
    assert "follows the UNZ trailer" in outcome.rejections[0].describe()
    assert outcome.acknowledgement is not None
    assert b"UCI+1+" in outcome.acknowledgement
    assert b"+4+12+UNB'" in outcome.acknowledgement
