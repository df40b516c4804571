"""CSV and fixed-width files from legacy systems, mapped to events by a layout.

`FlatFileParser` reads a file with a `FlatFileLayout` from the hub file and
returns a `ParsedFile`: the events of the good rows and a rejected record for
each bad row.
"""

from plantbus.formats.flatfile.layout import ColumnSpec, FieldSpec, FlatFileLayout
from plantbus.formats.flatfile.reader import FlatFileParser, FlatFormat

__all__ = ["ColumnSpec", "FieldSpec", "FlatFileLayout", "FlatFileParser", "FlatFormat"]
