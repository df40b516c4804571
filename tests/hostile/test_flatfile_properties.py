"""Hostile flat files: every row becomes an event or a rejected record, nothing else."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from plantbus.errors import FormatError
from plantbus.formats.flatfile import FlatFileLayout, FlatFileParser
from plantbus.formats.parsed import ParsedFile
from tests.hostile.properties import PROPERTY_SETTINGS, Samples, mutated, parse_or_error

BERLIN = ZoneInfo("Europe/Berlin")
CSV = FlatFileParser(
    FlatFileLayout.model_validate(
        {
            "encoding": "cp1252",
            "delimiter": ";",
            "decimal_separator": ",",
            "thousands_separator": ".",
            "timezone": "Europe/Berlin",
            "event_type": "production.workorder.completed.v1",
            "fields": {
                "work_order_id": {"column": "Auftrag"},
                "item": {"column": "Artikel"},
                "quantity": {"column": "Menge", "type": "quantity", "unit": "kg"},
                "completed_at": {
                    "column": "Ende",
                    "type": "datetime",
                    "format": "%d.%m.%Y %H:%M",
                },
            },
        }
    ),
    "csv",
)
FIXED = FlatFileParser(
    FlatFileLayout.model_validate(
        {
            "encoding": "latin-1",
            "header": False,
            "event_type": "production.workorder.started.v1",
            "id_column": "order",
            "columns": [
                {"name": "order", "start": 1, "width": 8},
                {"name": "at", "start": 9, "width": 20},
            ],
            "fields": {
                "work_order_id": {"column": "order"},
                "started_at": {"column": "at", "type": "datetime"},
            },
        }
    ),
    "fixed_width",
)
SEEDS = Samples(
    [
        (
            "Auftrag;Artikel;Menge;Ende\r\n"
            "WO-1;Mutter-Ü;1.234,5;02.03.2026 14:05\r\n"
            'WO-2;"Bolzen; ""lang""";12,5;29.03.2026 03:30\r\n'
            'WO-3;"zwei\r\nZeilen";7;25.10.2026 01:59\r\n'
        ).encode("cp1252"),
        b"WO-1    2026-03-02T06:00:00Z\nWO-2    2026-03-02T07:00:00+01:00\n",
    ]
)
# Characters that cp1252 encodes, including the delimiter, quotes and newlines.
ITEM_TEXT = st.text(
    st.sampled_from("abcXYZ019 -_;\"'\r\näöüßÄÖÜ€µ§°"), min_size=1, max_size=12
)


def _check(parser: FlatFileParser, data: bytes) -> None:
    result = parse_or_error(lambda d: parser(d, "hostile.txt"), data, FormatError)
    if isinstance(result, FormatError):
        assert result.problems, "a FormatError lists no problem"
        return
    assert isinstance(result, ParsedFile)
    ids = [event.id for event in result.events]
    if parser.layout.id_column is None:
        assert len(ids) == len(set(ids)), "two rows of one file share an event id"
    for record in result.rejected:
        row = record.payload[record.details["row_offset"] :]
        assert row, "a rejected row has no bytes"
        assert row in data, "a rejected row lost its original bytes"
        assert record.details["line"] >= 1
        assert record.message.strip()
    again = parser(data, "hostile.txt")
    assert isinstance(again, ParsedFile)
    assert [e.id for e in again.events] == ids, "the same bytes gave other ids"


@PROPERTY_SETTINGS
@given(data=st.binary(max_size=512), fixed=st.booleans())
def test_flatfile_reader_any_bytes(data: bytes, fixed: bool) -> None:
    _check(FIXED if fixed else CSV, data)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_flatfile_reader_mutated_seeds(data: st.DataObject) -> None:
    body = data.draw(mutated(SEEDS))

    _check(CSV, body)
    _check(FIXED, body)


def _expected_time(moment: datetime) -> str | None:
    """Return the RFC 3339 form of a Berlin wall-clock time, None if not unique."""
    earlier = moment.replace(tzinfo=BERLIN, fold=0)
    later = moment.replace(tzinfo=BERLIN, fold=1)
    round_trip = earlier.astimezone(UTC).astimezone(BERLIN).replace(tzinfo=None)
    if round_trip != moment or earlier.utcoffset() != later.utcoffset():
        return None
    return earlier.isoformat()


@PROPERTY_SETTINGS
@given(
    rows=st.lists(
        st.tuples(
            st.from_regex(r"[A-Z]{2}-[0-9]{1,6}", fullmatch=True),
            ITEM_TEXT,
            st.decimals(0, 10**9, places=3),
            st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31)),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_flatfile_reader_written_rows_round_trip(
    rows: list[tuple[str, str, Decimal, datetime]],
) -> None:
    """Rows that a CSV writer wrote come back as the same values, one per row."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
    writer.writerow(["Auftrag", "Artikel", "Menge", "Ende"])
    for order, item, amount, moment in rows:
        number = f"{amount:,.3f}".replace(",", "_").replace(".", ",").replace("_", ".")
        writer.writerow([order, item, number, moment.strftime("%d.%m.%Y %H:%M")])
    data = out.getvalue().encode("cp1252")

    result = CSV(data, "written.csv")

    assert isinstance(result, ParsedFile)
    expected: list[dict[str, Any]] = []
    unclear = 0
    for order, item, amount, moment in rows:
        stamp = _expected_time(moment.replace(second=0, microsecond=0))
        # Identifiers reject control characters such as a quoted line break.
        text = item.strip()
        if stamp is None or not text or "\r" in text or "\n" in text:
            unclear += 1
            continue
        expected.append(
            {
                "work_order_id": order,
                "item": text,
                "quantity": {"value": format(amount, "f"), "unit": "kg"},
                "completed_at": stamp,
            }
        )
    assert [event.data for event in result.events] == expected
    assert len(result.rejected) == unclear
