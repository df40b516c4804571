"""The flat-file reader: CSV and fixed-width files to events and rejected rows."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from plantbus.errors import ConfigError, FormatError
from plantbus.formats.flatfile import FlatFileLayout, FlatFileParser
from plantbus.formats.flatfile.records import ID_NAMESPACE
from plantbus.formats.flatfile.values import CellError, to_date, to_decimal
from plantbus.formats.parsed import ParsedFile

CSV_LAYOUT: dict[str, Any] = {
    "encoding": "cp1252",
    "delimiter": ";",
    "decimal_separator": ",",
    "thousands_separator": ".",
    "timezone": "Europe/Berlin",
    "event_type": "production.workorder.completed.v1",
    "time_field": "completed_at",
    "fields": {
        "work_order_id": {"column": "Auftrag"},
        "item": {"column": "Artikel"},
        "quantity": {"column": "Menge", "type": "quantity", "unit_column": "ME"},
        "completed_at": {
            "column": "Ende",
            "type": "datetime",
            "format": "%d.%m.%Y %H:%M",
        },
        "lot": {"column": "Charge", "required": False},
        "warehouse": {"value": "WH-1"},
    },
}
CSV_FILE = (
    "Auftrag;Artikel;Menge;ME;Ende;Charge\r\n"
    "WO-1;Mutter-Ü;1.234,5;kg;02.03.2026 14:05;L-ä1\r\n"
    "WO-2;Schraube;12,5;u;31.02.2026 10:00;\r\n"
    "WO-3;Schraube;12,5x;u;02.03.2026 10:00;\r\n"
    "\r\n"
    'WO-4;"Bolzen; lang";7;u;29.03.2026 03:30;\r\n'
).encode("cp1252")

FIXED_LAYOUT: dict[str, Any] = {
    "encoding": "utf-8-sig",
    "header": False,
    "decimal_separator": ",",
    "timezone": "Europe/Berlin",
    "event_type": "production.material.consumed.v1",
    "columns": [
        {"name": "order", "start": 1, "width": 8},
        {"name": "item", "start": 9, "width": 10},
        {"name": "qty", "start": 19, "width": 8},
        {"name": "unit", "start": 27, "width": 3},
        {"name": "at", "start": 30, "width": 14},
    ],
    "fields": {
        "work_order_id": {"column": "order"},
        "item": {"column": "item"},
        "quantity": {"column": "qty", "type": "quantity", "unit_column": "unit"},
        "consumed_at": {"column": "at", "type": "datetime", "format": "%Y%m%d%H%M%S"},
    },
}


def _parser(
    layout: dict[str, Any], format: str = "csv", **extra: Any
) -> FlatFileParser:
    return FlatFileParser(
        FlatFileLayout.model_validate({**layout, **extra}),
        format,  # type: ignore[arg-type]
        plant="P1",
    )


def _row_id(data: bytes, line: int) -> str:
    digest = hashlib.sha256(data).hexdigest()
    return str(uuid.uuid5(ID_NAMESPACE, f"{digest}:{line}"))


def test_csv_reader_keeps_good_rows() -> None:
    result = _parser(CSV_LAYOUT)(CSV_FILE, "orders.csv")

    assert isinstance(result, ParsedFile)
    assert [e.to_dict() for e in result.events] == [
        {
            "specversion": "1.0",
            "id": _row_id(CSV_FILE, 2),
            "source": "csv:orders.csv",
            "type": "production.workorder.completed.v1",
            "time": "2026-03-02T14:05:00+01:00",
            "datacontenttype": "application/json",
            "dataschema": "urn:plantbus:schema:production.workorder.completed.v1:1.0.0",
            "plant": "P1",
            "partitionkey": "WO-1",
            "data": {
                "work_order_id": "WO-1",
                "item": "Mutter-Ü",
                "quantity": {"value": "1234.5", "unit": "kg"},
                "completed_at": "2026-03-02T14:05:00+01:00",
                "lot": "L-ä1",
                "warehouse": "WH-1",
            },
        },
        {
            "specversion": "1.0",
            "id": _row_id(CSV_FILE, 6),
            "source": "csv:orders.csv",
            "type": "production.workorder.completed.v1",
            "time": "2026-03-29T03:30:00+02:00",
            "datacontenttype": "application/json",
            "dataschema": "urn:plantbus:schema:production.workorder.completed.v1:1.0.0",
            "plant": "P1",
            "partitionkey": "WO-4",
            "data": {
                "work_order_id": "WO-4",
                "item": "Bolzen; lang",
                "quantity": {"value": "7", "unit": "u"},
                "completed_at": "2026-03-29T03:30:00+02:00",
                "warehouse": "WH-1",
            },
        },
    ]
    header = b"Auftrag;Artikel;Menge;ME;Ende;Charge\r\n"
    bad_date, bad_number = result.rejected
    assert bad_date.payload == header + b"WO-2;Schraube;12,5;u;31.02.2026 10:00;\r\n"
    assert bad_date.details == {
        "file": "orders.csv",
        "line": 3,
        "column": "Ende",
        "value": "31.02.2026 10:00",
        "rule": "expected a time in the format '%d.%m.%Y %H:%M'",
        "row_offset": len(header),
    }
    assert bad_date.message == (
        "Line 3 of 'orders.csv' was rejected: Ende is '31.02.2026 10:00': "
        "expected a time in the format '%d.%m.%Y %H:%M'."
    )
    assert (
        bad_number.payload[len(header) :]
        == b"WO-3;Schraube;12,5x;u;02.03.2026 10:00;\r\n"
    )
    assert bad_number.details["line"] == 4
    assert bad_number.details["column"] == "Menge"
    assert bad_number.details["value"] == "12,5x"
    assert bad_number.details["rule"] == (
        "expected a decimal number with ',' as decimal separator, such as '1.234,5'"
    )


def test_csv_reader_same_bytes_same_ids() -> None:
    parser = _parser(CSV_LAYOUT)

    first = parser(CSV_FILE, "orders.csv")
    again = parser(CSV_FILE, "orders-copy.csv")
    changed = parser(CSV_FILE + b"\r\n", "orders.csv")

    assert isinstance(first, ParsedFile)
    assert isinstance(again, ParsedFile)
    assert isinstance(changed, ParsedFile)
    assert [e.id for e in first.events] == [e.id for e in again.events]
    assert not {e.id for e in first.events} & {e.id for e in changed.events}


def test_csv_reader_takes_ids_from_id_column() -> None:
    parser = _parser(CSV_LAYOUT, id_column="Auftrag")

    result = parser(CSV_FILE, "orders.csv")

    assert isinstance(result, ParsedFile)
    expected = [
        str(uuid.uuid5(ID_NAMESPACE, f"production.workorder.completed.v1:{order}"))
        for order in ("WO-1", "WO-4")
    ]
    assert [e.id for e in result.events] == expected


def test_csv_reader_utf8_bom_and_positions() -> None:
    layout = {
        "encoding": "utf-8-sig",
        "header": False,
        "event_type": "production.workorder.started.v1",
        "fields": {
            "work_order_id": {"column": 1},
            "started_at": {"column": 2, "type": "datetime"},
        },
    }
    data = b"\xef\xbb\xbfWO-9,2026-03-02T06:00:00Z\nWO-10,2026-03-02T07:00:00\n"

    result = _parser(layout)(data, "starts.csv")

    assert isinstance(result, ParsedFile)
    [event] = result.events
    assert event.data == {
        "work_order_id": "WO-9",
        "started_at": "2026-03-02T06:00:00+00:00",
    }
    [naive] = result.rejected
    assert naive.payload == b"\xef\xbb\xbfWO-10,2026-03-02T07:00:00\n"
    assert naive.details["line"] == 2
    assert naive.details["column"] == "column 2"
    assert "sets no `timezone`" in naive.details["rule"]


def test_csv_reader_rejects_bom_that_contradicts_encoding() -> None:
    with pytest.raises(FormatError, match="set `encoding` to utf-8-sig"):
        _parser(CSV_LAYOUT)(b"\xef\xbb\xbf" + CSV_FILE, "orders.csv")


def test_csv_reader_rejects_header_without_configured_column() -> None:
    data = "Auftrag;Artikel;Menge;ME;Datum\r\n".encode("cp1252")

    with pytest.raises(FormatError) as caught:
        _parser(CSV_LAYOUT)(data, "orders.csv")

    [header] = caught.value.problems
    assert header.line == 1
    assert header.message == (
        "is missing the columns 'Charge', 'Ende'; the header names 'Auftrag', "
        "'Artikel', 'Menge', 'ME', 'Datum', so check the layout's column names "
        "and `delimiter` ';'"
    )


def test_csv_reader_rejects_undecodable_byte() -> None:
    # 0x81 has no character in cp1252.
    data = CSV_FILE.replace(b"Schraube;12,5;", b"Schr\x81ube;12,5;")

    result = _parser(CSV_LAYOUT)(data, "orders.csv")

    assert isinstance(result, ParsedFile)
    lines = {r.details["line"]: r.details for r in result.rejected}
    assert lines[3]["column"] == "Artikel"
    assert "not valid cp1252" in lines[3]["rule"]


def test_csv_reader_rejects_broken_quotes() -> None:
    data = (
        "Auftrag;Artikel;Menge;ME;Ende;Charge\n"
        'WO-5;"Bol"zen;1;u;02.03.2026 10:00;\n'
        "WO-6;A;1;u;02.03.2026 10:00;;x\n"
        "WO-7;B;1;u;02.03.2026 10:00;;;\n"
    ).encode("cp1252")

    result = _parser(CSV_LAYOUT)(data, "orders.csv")

    assert isinstance(result, ParsedFile)
    assert [e.data["work_order_id"] for e in result.events] == ["WO-7"]
    quotes, extra = result.rejected
    assert quotes.details["line"] == 2
    assert quotes.details["column"] == "record"
    assert quotes.details["rule"] == "breaks the CSV rules: ';' expected after '\"'"
    assert extra.details["line"] == 3
    assert extra.details["value"] == "x"
    assert extra.details["rule"] == (
        "has 7 values but the header names 6 columns; quote values that contain ';'"
    )


def test_csv_reader_rejects_dst_gap_and_fold() -> None:
    data = (
        "Auftrag;Artikel;Menge;ME;Ende;Charge\n"
        "WO-8;A;1;u;29.03.2026 02:30;\n"
        "WO-9;A;1;u;25.10.2026 02:30;\n"
    ).encode("cp1252")

    rejecting = _parser(CSV_LAYOUT)(data, "dst.csv")
    later = _parser(CSV_LAYOUT, ambiguous_time="later")(data, "dst.csv")

    assert isinstance(rejecting, ParsedFile)
    assert isinstance(later, ParsedFile)
    skipped, twice = rejecting.rejected
    assert "does not exist in time zone Europe/Berlin" in skipped.details["rule"]
    assert "occurs twice in time zone Europe/Berlin" in twice.details["rule"]
    [event] = later.events
    assert event.data["completed_at"] == "2026-10-25T02:30:00+01:00"


def test_csv_reader_rejects_value_that_breaks_schema() -> None:
    data = (
        "Auftrag;Artikel;Menge;ME;Ende;Charge\nWO-8;A;-1;u;02.03.2026 10:00;\n"
    ).encode("cp1252")

    result = _parser(CSV_LAYOUT)(data, "neg.csv")

    assert isinstance(result, ParsedFile)
    [negative] = result.rejected
    assert negative.details["column"] == "Menge"
    assert negative.details["value"] == "-1"
    assert negative.details["rule"] == (
        "maps to production.workorder.completed.v1 whose field "
        "`data.quantity.value` is '-1': expected a non-negative decimal string "
        "such as '12.5'"
    )


def test_fixed_width_reader_rejects_short_line() -> None:
    data = (
        "\ufeffWO-1    Blech-Ä     12,500kg 20260302140500\n"
        "WO-2    Blech-B      3,000u  2026030215\n"
        "WO-3    Blech-C\n"
        "\n"
        "WO-4    Blech-D      1,2x  kg 20260302160000"
    ).encode("utf-8")

    result = _parser(FIXED_LAYOUT, "fixed_width")(data, "moves.txt")

    assert isinstance(result, ParsedFile)
    [event] = result.events
    assert event.source == "fixed-width:moves.txt"
    assert event.id == _row_id(data, 1)
    assert event.data == {
        "work_order_id": "WO-1",
        "item": "Blech-Ä",
        "quantity": {"value": "12.500", "unit": "kg"},
        "consumed_at": "2026-03-02T14:05:00+01:00",
    }
    cut, short, number = result.rejected
    assert cut.details["line"] == 2
    assert cut.details["column"] == "at"
    assert cut.details["value"] == "2026030215"
    assert short.payload == b"\xef\xbb\xbfWO-3    Blech-C\n"
    assert short.details["line"] == 3
    assert short.details["column"] == "qty"
    assert short.details["value"] is None
    assert short.details["rule"] == "is missing; the column is required"
    assert number.details["line"] == 5
    assert number.details["value"] == "1,2x"


def test_flatfile_parser_rejects_inconsistent_layout() -> None:
    with pytest.raises(ConfigError, match="`columns` does not declare"):
        _parser(
            FIXED_LAYOUT,
            "fixed_width",
            columns=[{"name": "order", "start": 1, "width": 8}],
        )
    with pytest.raises(ConfigError, match="not in the event catalogue"):
        _parser(CSV_LAYOUT, event_type="production.nothing.v1")
    with pytest.raises(ValidationError, match="does not write ASCII characters"):
        FlatFileLayout.model_validate({**CSV_LAYOUT, "encoding": "utf-16"})
    with pytest.raises(ValidationError, match="is not an IANA time zone"):
        FlatFileLayout.model_validate({**CSV_LAYOUT, "timezone": "Mars/Olympus"})


def test_fixed_width_reader_skips_title_header() -> None:
    data = (
        "Verbrauch Schicht 1\n"
        "order   item      qty     unitat\n"
        f"{'WO-1':8}{'Blech-A':10}{'2,5':>8}{'kg':3}20260302140500\n"
    ).encode()
    parser = _parser(FIXED_LAYOUT, "fixed_width", skip_lines=1, header=True)

    result = parser(data, "moves.txt")

    assert isinstance(result, ParsedFile)
    assert result.rejected == []
    [event] = result.events
    assert event.data["quantity"] == {"value": "2.5", "unit": "kg"}


def test_csv_reader_rejects_too_many_bad_rows() -> None:
    parser = _parser(CSV_LAYOUT, max_rejected_rows=1)

    with pytest.raises(FormatError) as caught:
        parser(CSV_FILE, "orders.csv")

    summary, bad_date, bad_number = caught.value.problems
    assert summary.message == (
        "2 rows are invalid, more than `max_rejected_rows` (1), so the whole "
        "file is rejected; check the layout against the file, or raise "
        "`max_rejected_rows`"
    )
    assert bad_date.line == 3
    assert bad_date.message == "Ende: expected a time in the format '%d.%m.%Y %H:%M'"
    assert bad_date.details == {"value": "31.02.2026 10:00"}
    assert bad_number.line == 4


def test_csv_reader_converts_decimal_integer_and_keys() -> None:
    layout = {
        "delimiter": "|",
        "header": False,
        "thousands_separator": "'",
        "event_type": "production.workorder.progressed.v1",
        "subject": {"column": 5},
        "partition_key": {"column": 1},
        "fields": {
            "work_order_id": {"column": 1},
            "quantity": {"column": 2, "type": "quantity", "unit": "u"},
            "duration_seconds": {"column": 3, "type": "decimal"},
            "cycles": {"column": 4, "type": "integer"},
            "operation": {"column": 5},
        },
    }
    data = b"WO-1|1'250.5|3'600|12|OP-10\nWO-2|1|60|twelve|OP-20\n"

    result = _parser(layout)(data, "progress.txt")

    assert isinstance(result, ParsedFile)
    [event] = result.events
    assert event.data == {
        "work_order_id": "WO-1",
        "quantity": {"value": "1250.5", "unit": "u"},
        "duration_seconds": "3600",
        "cycles": 12,
        "operation": "OP-10",
    }
    assert event.subject == "OP-10"
    assert event.partitionkey == "WO-1"
    [cycles] = result.rejected
    assert cycles.details["column"] == "column 4"
    assert cycles.details["value"] == "twelve"
    assert cycles.details["rule"] == (
        "expected a whole number of at most 18 digits, such as '42'"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.234.567,89", "1234567.89"),
        ("1234567,89", "1234567.89"),
        ("+5", "5"),
        ("-0,5", "-0.5"),
        ("007", "7"),
        ("1.23,4", None),
        ("12,", None),
        (",5", None),
        ("1e5", None),
        ("١٢", None),
    ],
)
def test_flatfile_values_read_decimal_comma(text: str, expected: str | None) -> None:
    layout = FlatFileLayout.model_validate(
        {**CSV_LAYOUT, "decimal_separator": ",", "thousands_separator": "."}
    )

    if expected is None:
        with pytest.raises(CellError):
            to_decimal(text, layout)
    else:
        assert to_decimal(text, layout) == expected


def test_flatfile_values_read_dates() -> None:
    assert to_date("2026-03-02", None) == "2026-03-02"
    assert to_date("02.03.26", "%d.%m.%y") == "2026-03-02"
    with pytest.raises(CellError) as caught:
        to_date("2026-03-02", "%d.%m.%y")
    assert str(caught.value) == "expected a date in the format '%d.%m.%y'"
