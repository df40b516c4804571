"""`plantbus dlq` and `plantbus replay` against real SQLite files."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from plantbus.cli import app

from .seed import audit, letters, seed

runner = CliRunner()


def test_dlq_list_shows_open_letters(hub_file: Path) -> None:
    ids = seed(hub_file)

    result = runner.invoke(app, ["dlq", "list", str(hub_file)])

    assert result.exit_code == 0, result.output
    assert "deliver:erp" in result.output
    assert "production.workorder.progressed.v1" in result.output
    assert "orders.xml" in result.output
    assert "work order WO1 is closed in the ERP" in result.output
    # The error is cut to one short line.
    assert "reopen it first. reopen it first. reopen it first. reopen" not in (
        result.output
    )
    for letter_id in ids.values():
        assert f"│  {letter_id} │" in result.output


def test_dlq_list_filters_by_type_and_status(hub_file: Path) -> None:
    seed(hub_file)

    by_type = runner.invoke(
        app,
        ["dlq", "list", str(hub_file), "--type", "production.workorder.progressed.v1"],
    )
    discarded = runner.invoke(
        app, ["dlq", "list", str(hub_file), "--status", "discarded"]
    )
    invalid = runner.invoke(app, ["dlq", "list", str(hub_file), "--status", "gone"])

    assert by_type.exit_code == 0
    assert "deliver:erp" in by_type.output
    assert "orders.xml" not in by_type.output
    assert discarded.output.strip() == "No discarded dead letters match."
    assert invalid.exit_code == 2
    assert "'gone'" in invalid.output


def test_dlq_list_without_state_store_exits_2(hub_file: Path) -> None:
    result = runner.invoke(app, ["dlq", "list", str(hub_file)])

    assert result.exit_code == 2
    assert "There is no state store" in result.output


def test_dlq_show_prints_attempts_and_json(hub_file: Path) -> None:
    ids = seed(hub_file)

    result = runner.invoke(app, ["dlq", "show", str(hub_file), str(ids["delivery"])])

    assert result.exit_code == 0, result.output
    assert "attempts:     2" in result.output
    assert "still closed" in result.output
    payload = result.output.split("bytes):\n", 1)[1]
    assert json.loads(payload)["data"]["work_order_id"] == "WO1"
    assert '\n  "data": {' in payload


def test_dlq_show_binary_payload_as_hex(hub_file: Path) -> None:
    ids = seed(hub_file)

    result = runner.invoke(app, ["dlq", "show", str(hub_file), str(ids["http"])])

    assert result.exit_code == 0, result.output
    assert "payload (512 bytes):" in result.output
    assert "00000000  00 01 02 03" in result.output
    assert "… 256 more bytes" in result.output


def test_dlq_show_unknown_id_exits_1(hub_file: Path) -> None:
    seed(hub_file)

    result = runner.invoke(app, ["dlq", "show", str(hub_file), "99"])

    assert result.exit_code == 1
    assert "There is no dead letter 99" in result.output


def test_dlq_discard_marks_and_audits(hub_file: Path) -> None:
    ids = seed(hub_file)

    result = runner.invoke(
        app,
        [
            "dlq",
            "discard",
            str(hub_file),
            "--error",
            "B2MML",
            "--reason",
            "file sent again by hand",
            "--actor",
            "anna",
        ],
    )

    assert result.exit_code == 0, result.output
    assert [x.id for x in letters(hub_file, "discarded")] == [ids["folder"]]
    (record,) = audit(hub_file)
    assert record.actor == "anna"
    assert record.action == "dead_letter.discard"
    assert record.details["ids"] == [ids["folder"]]
    assert record.details["reason"] == "file sent again by hand"
    assert record.details["filter"] == {"error_contains": "B2MML"}


def test_dlq_redrive_pipeline_letter_waits_for_pipeline(hub_file: Path) -> None:
    ids = seed(hub_file)

    result = runner.invoke(app, ["dlq", "redrive", str(hub_file), str(ids["delivery"])])

    assert result.exit_code == 0, result.output
    assert [x.id for x in letters(hub_file, "redriving")] == [ids["delivery"]]
    (record,) = audit(hub_file)
    assert record.action == "dead_letter.redrive"
    assert record.actor  # the OS user name
    assert record.details["ids"] == [ids["delivery"]]


def test_dlq_redrive_folder_letter_writes_inbox(hub_file: Path) -> None:
    ids = seed(hub_file)
    inbox = hub_file.parent / "inbox"
    inbox.mkdir()
    (inbox / "orders.xml").write_bytes(b"a newer file of the same name")

    result = runner.invoke(app, ["dlq", "redrive", str(hub_file), str(ids["folder"])])

    assert result.exit_code == 0, result.output
    assert (inbox / "orders.redrive1.xml").read_bytes() == b"<ProductionSchedule/>"
    assert (inbox / "orders.xml").read_bytes() == b"a newer file of the same name"
    (letter,) = letters(hub_file, "redriven")
    assert letter.details["redrive_outcome"] == (
        "written into the inbox of 'mes-exports' as orders.redrive1.xml"
    )


def test_dlq_redrive_http_letter_rejected(hub_file: Path) -> None:
    ids = seed(hub_file)

    result = runner.invoke(
        app, ["dlq", "redrive", str(hub_file), str(ids["http"]), "99"]
    )

    assert result.exit_code == 1
    assert "not a folder source" in result.output
    assert "no dead letter has id 99" in result.output
    assert len(letters(hub_file, "open")) == 3
    (record,) = audit(hub_file)
    assert len(record.details["rejected"]) == 2


def test_dlq_redrive_without_ids_or_filter_exits_2(hub_file: Path) -> None:
    seed(hub_file)

    result = runner.invoke(app, ["dlq", "redrive", str(hub_file)])

    assert result.exit_code == 2
    assert "needs at least one non-empty filter" in result.output
    assert len(letters(hub_file, "open")) == 3


def test_replay_stores_request_and_audit(hub_file: Path) -> None:
    seed(hub_file)

    result = runner.invoke(
        app,
        [
            "replay",
            str(hub_file),
            "--pipeline",
            "erp-postings",
            "--from-time",
            "2026-03-01T06:00:00+00:00",
            "--force",
        ],
    )

    assert result.exit_code == 0, result.output
    assert "Replay request 1 stored" in result.output
    (record,) = audit(hub_file)
    assert record.action == "pipeline.replay"
    assert record.details["from_time"] == 1772344800.0
    assert record.details["force"] is True


def test_replay_unknown_pipeline_exits_2(hub_file: Path) -> None:
    seed(hub_file)

    result = runner.invoke(
        app, ["replay", str(hub_file), "--pipeline", "nope", "--from-offset", "1"]
    )

    assert result.exit_code == 2
    assert "Pipeline 'nope' is not in the hub file" in result.output
    assert audit(hub_file) == []


def test_dlq_redrive_empty_error_filter_selects_nothing(hub_file: Path) -> None:
    seed(hub_file)

    result = runner.invoke(app, ["dlq", "redrive", str(hub_file), "--error", ""])

    assert result.exit_code == 2
    assert "needs at least one non-empty filter" in result.output
    assert all(letter.details["status"] == "open" for letter in letters(hub_file))


def test_dlq_rejects_out_of_range_ids(hub_file: Path) -> None:
    seed(hub_file)
    huge = str(10**20)

    show = runner.invoke(app, ["dlq", "show", str(hub_file), huge])
    redriven = runner.invoke(app, ["dlq", "redrive", str(hub_file), huge])

    assert show.exit_code == 1
    assert f"There is no dead letter {huge}" in show.output
    assert redriven.exit_code == 2
    assert "out of range" in redriven.output


def test_dlq_list_rejects_time_before_epoch(hub_file: Path) -> None:
    seed(hub_file)

    result = runner.invoke(app, ["dlq", "list", str(hub_file), "--since", "0001-01-01"])

    assert result.exit_code == 2
    assert "out of range" in result.output
