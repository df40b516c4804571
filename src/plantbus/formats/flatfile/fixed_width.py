"""Read the records of a fixed-width file, one per line."""

from __future__ import annotations

from collections.abc import Iterator

from plantbus.formats.flatfile.layout import FlatFileLayout
from plantbus.formats.flatfile.lines import Line
from plantbus.formats.flatfile.records import Row


def read_fixed_width(lines: list[Line], layout: FlatFileLayout) -> Iterator[Row]:
    """Yield one Row per non-blank line, cut at the layout's column positions.

    A column that starts past the end of a short line is left out of the row,
    so the mapper reports it as missing; a column that the line cuts short
    keeps the characters that are there.
    """
    index = {column.name: position for position, column in enumerate(layout.columns)}
    for line in lines[layout.preamble_lines("fixed_width") :]:
        text = line.text.rstrip("\r\n")
        if not text.strip():
            continue
        cells = [
            text[column.start - 1 : column.end - 1]
            if column.start <= len(text)
            else None
            for column in layout.columns
        ]
        yield Row(line.number, line.raw, cells, index)
