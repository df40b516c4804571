"""Read the records of a CSV file, each with its line number and original bytes."""

from __future__ import annotations

import csv
from collections.abc import Iterator

from plantbus.errors import FormatError, FormatProblem
from plantbus.formats.flatfile.layout import FlatFileLayout
from plantbus.formats.flatfile.lines import Line
from plantbus.formats.flatfile.records import Row, RowProblem


def read_csv(
    lines: list[Line], layout: FlatFileLayout, source_name: str
) -> Iterator[Row | RowProblem]:
    """Yield one Row per record, or a RowProblem for a record the CSV rules reject.

    A quoted value may span lines; such a record's line is its first line and
    its bytes are those of all its lines. Blank lines are skipped.
    """
    body = lines[layout.skip_lines :]
    reader = csv.reader(
        (line.text for line in body),
        delimiter=layout.delimiter,
        quotechar=layout.quotechar,
        strict=True,
    )
    index: dict[str, int] = {}
    if layout.has_header("csv"):
        index = _header(reader, body, layout, source_name)

    consumed = reader.line_num
    while True:
        first = consumed
        try:
            cells: list[str | None] = list(next(reader))
        except StopIteration:
            return
        except csv.Error as exc:
            consumed = max(reader.line_num, first + 1)
            yield _problem(body[first:consumed], None, f"breaks the CSV rules: {exc}")
            continue
        consumed = reader.line_num
        record = body[first:consumed]
        if not any(cell and cell.strip() for cell in cells):
            continue
        extra = [cell or "" for cell in cells[len(index) :]] if index else []
        if any(cell.strip() for cell in extra):
            yield _problem(
                record,
                layout.delimiter.join(extra),
                f"has {len(cells)} values but the header names {len(index)} "
                f"columns; quote values that contain {layout.delimiter!r}",
            )
            continue
        yield Row(record[0].number, b"".join(line.raw for line in record), cells, index)


def _header(
    reader: Iterator[list[str]],
    body: list[Line],
    layout: FlatFileLayout,
    source_name: str,
) -> dict[str, int]:
    line = body[0].number if body else layout.skip_lines + 1
    try:
        names = [name.strip() for name in next(reader)]
    except StopIteration:
        names = []
    except csv.Error as exc:
        raise FormatError(
            source_name,
            [FormatProblem("header", f"breaks the CSV rules: {exc}", line=line)],
        ) from None

    index: dict[str, int] = {}
    for position, name in enumerate(names):
        index.setdefault(name, position)
    missing = sorted(
        {str(ref) for _, ref in layout.references() if isinstance(ref, str)}
        - set(index)
    )
    if missing:
        noun = "column" if len(missing) == 1 else "columns"
        listed = ", ".join(map(repr, missing))
        raise FormatError(
            source_name,
            [
                FormatProblem(
                    "header",
                    f"is missing the {noun} {listed}; the header names "
                    f"{', '.join(map(repr, names)) or 'nothing'}, so check the "
                    f"layout's column names and `delimiter` {layout.delimiter!r}",
                    line=line,
                )
            ],
        )
    return index


def _problem(record: list[Line], value: str | None, rule: str) -> RowProblem:
    number = record[0].number if record else 0
    raw = b"".join(line.raw for line in record)
    return RowProblem(number, raw, "record", value, rule)
