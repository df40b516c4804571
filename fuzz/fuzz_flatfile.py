"""Fuzz the flat-file reader: any bytes give events and rejected rows, or a FormatError.

The first byte picks the layout: 'F' a fixed-width layout in UTF-8, anything
else a CSV layout in cp1252 with decimal comma. Besides the error type, each
input checks that every rejected row keeps bytes of the input and names its line.
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["plantbus"]):
    from plantbus.errors import FormatError
    from plantbus.formats.flatfile import FlatFileLayout, FlatFileParser
    from plantbus.formats.parsed import ParsedFile

from _harness import check, main

CSV = FlatFileParser(
    FlatFileLayout.model_validate(
        {
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
                "quantity": {
                    "column": "Menge",
                    "type": "quantity",
                    "unit_column": "ME",
                },
                "completed_at": {
                    "column": "Ende",
                    "type": "datetime",
                    "format": "%d.%m.%Y %H:%M",
                },
            },
        }
    ),
    "csv",
    plant="P1",
)
FIXED = FlatFileParser(
    FlatFileLayout.model_validate(
        {
            "encoding": "utf-8-sig",
            "header": False,
            "decimal_separator": ",",
            "timezone": "Europe/Berlin",
            "ambiguous_time": "earlier",
            "event_type": "production.workorder.completed.v1",
            "id_column": "order",
            "columns": [
                {"name": "order", "start": 2, "width": 10},
                {"name": "item", "start": 12, "width": 10},
                {"name": "qty", "start": 22, "width": 8},
                {"name": "unit", "start": 30, "width": 3},
                {"name": "at", "start": 33, "width": 14},
            ],
            "fields": {
                "work_order_id": {"column": "order"},
                "item": {"column": "item"},
                "quantity": {
                    "column": "qty",
                    "type": "quantity",
                    "unit_column": "unit",
                },
                "completed_at": {
                    "column": "at",
                    "type": "datetime",
                    "format": "%Y%m%d%H%M%S",
                },
            },
        }
    ),
    "fixed_width",
)


def parse(data: bytes) -> None:
    parser = FIXED if data[:1] == b"F" else CSV
    result = parser(data, "fuzz.txt")
    assert isinstance(result, ParsedFile)
    for record in result.rejected:
        row = record.payload[record.details["row_offset"] :]
        assert row and row in data, "a rejected row lost its original bytes"
        assert record.details["line"] >= 1, "a rejected row has no line number"
        assert record.message.strip(), "a rejected row has no message"


def test_one_input(data: bytes) -> None:
    check(parse, data, FormatError)


if __name__ == "__main__":
    main(test_one_input)
