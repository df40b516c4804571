"""The layout of a CSV or fixed-width file, as a hub file declares it."""

from __future__ import annotations

import codecs
import zoneinfo
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# A column by its header name, or by its position counted from 1.
ColumnRef = str | int
FieldType = Literal["string", "decimal", "integer", "quantity", "datetime", "date"]

# Characters whose bytes must be the same as in ASCII, so that lines and
# delimiters can be found in the raw bytes before decoding.
_ASCII_PROBE = "\r\n\t ,;|\"'0123456789.:-+/abcXYZ"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(_Strict):
    """Source of one event field (a column or a constant) and its type."""

    column: ColumnRef | None = None
    value: str | None = None
    type: FieldType = "string"
    # Unit of a quantity: a fixed symbol, or the column that contains it.
    unit: str | None = None
    unit_column: ColumnRef | None = None
    # strptime format of a datetime or date, such as %d.%m.%Y %H:%M; by
    # default ISO 8601.
    format: str | None = None
    # An empty cell is an error when required, else the field is left out.
    required: bool = True

    @model_validator(mode="after")
    def _check(self) -> FieldSpec:
        if (self.column is None) == (self.value is None):
            raise ValueError("give exactly one of `column` or `value`")
        if isinstance(self.column, int) and self.column < 1:
            raise ValueError(
                "a column position is counted from 1, so it must be 1 or more"
            )
        if self.type == "quantity" and (self.unit is None) == (
            self.unit_column is None
        ):
            raise ValueError("a quantity needs exactly one of `unit` or `unit_column`")
        if self.type != "quantity" and (self.unit or self.unit_column is not None):
            raise ValueError("`unit` and `unit_column` apply only to type quantity")
        if self.format is not None and self.type not in ("datetime", "date"):
            raise ValueError("`format` applies only to types datetime and date")
        return self


class ColumnSpec(_Strict):
    """A fixed-width column: its name, first character (counted from 1) and width."""

    name: str = Field(min_length=1)
    start: int = Field(ge=1)
    width: int = Field(ge=1)

    @property
    def end(self) -> int:
        """Return the position after the column's last character, counted from 1."""
        return self.start + self.width


class FlatFileLayout(_Strict):
    """Rules that turn the lines of a flat file into events of one type."""

    encoding: str = "utf-8"
    # Lines before the header (or before the data) that are skipped, such as a title.
    skip_lines: int = Field(default=0, ge=0)
    # The first line after `skip_lines` names the columns (CSV) or is skipped
    # (fixed width). By default CSV files have a header and fixed-width files
    # have none.
    header: bool | None = None
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quotechar: str = Field(default='"', min_length=1, max_length=1)
    # Fixed-width columns; for CSV without a header, fields use positions instead.
    columns: list[ColumnSpec] = []
    decimal_separator: Literal[".", ","] = "."
    thousands_separator: Literal[".", ",", " ", "'"] | None = None
    # IANA time zone of the plant, such as Europe/Berlin, for times without offset.
    timezone: str | None = None
    # A local time that occurs twice when clocks go back: reject the row, or
    # take the earlier or the later of the two instants.
    ambiguous_time: Literal["reject", "earlier", "later"] = "reject"
    event_type: str = Field(min_length=1)
    fields: dict[str, FieldSpec] = Field(min_length=1)
    # A column whose value identifies the record; without it, event ids come
    # from the file's content and the line number.
    id_column: ColumnRef | None = None
    subject: FieldSpec | None = None
    # By default the catalogue takes the partition key from the event data.
    partition_key: FieldSpec | None = None
    # A datetime field whose value becomes the event time; by default the
    # time of reading.
    time_field: str | None = None
    # More bad rows than this reject the whole file as one dead letter, since
    # a wrong layout would otherwise store one dead letter per row.
    max_rejected_rows: int = Field(default=1000, ge=0)

    @field_validator("encoding")
    @classmethod
    def _ascii_compatible(cls, encoding: str) -> str:
        try:
            info = codecs.lookup(encoding)
        except LookupError:
            raise ValueError(f"{encoding!r} is not a known text encoding") from None
        # utf-8-sig writes a byte order mark first and is UTF-8 after it.
        name = "utf-8" if info.name == "utf-8-sig" else info.name
        try:
            same = _ASCII_PROBE.encode(name) == _ASCII_PROBE.encode("ascii")
        except UnicodeError:
            same = False
        if not same:
            raise ValueError(
                f"{encoding!r} does not write ASCII characters as ASCII bytes; "
                f"use an encoding such as utf-8, utf-8-sig, cp1252 or latin-1"
            )
        return encoding

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, timezone: str | None) -> str | None:
        if timezone is None:
            return None
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{timezone!r} is not an IANA time zone such as 'Europe/Berlin'"
            ) from None
        return timezone

    @model_validator(mode="after")
    def _check(self) -> FlatFileLayout:
        if self.decimal_separator == self.thousands_separator:
            raise ValueError("`decimal_separator` and `thousands_separator` are equal")
        if self.delimiter == self.quotechar or self.delimiter in "\r\n":
            raise ValueError("`delimiter` must differ from `quotechar` and newlines")
        if self.time_field is not None:
            spec = self.fields.get(self.time_field)
            if spec is None or spec.type != "datetime":
                raise ValueError(
                    f"`time_field` {self.time_field!r} must name a datetime field "
                    f"of `fields`"
                )
        return self

    def has_header(self, format: str) -> bool:
        """Return True when a file of `format` ("csv" or "fixed_width") has a header."""
        return self.header if self.header is not None else format == "csv"

    def preamble_lines(self, format: str) -> int:
        """Return the number of lines before the first record: skipped and header."""
        return self.skip_lines + (1 if self.has_header(format) else 0)

    def zone(self) -> zoneinfo.ZoneInfo | None:
        """Return the plant's time zone, or None when the layout sets none."""
        return zoneinfo.ZoneInfo(self.timezone) if self.timezone else None

    def references(self) -> list[tuple[str, ColumnRef]]:
        """Return every column that a field, the unit, the id or a key reads."""
        specs = list(self.fields.items())
        if self.subject is not None:
            specs.append(("subject", self.subject))
        if self.partition_key is not None:
            specs.append(("partition_key", self.partition_key))
        refs: list[tuple[str, ColumnRef]] = []
        for name, spec in specs:
            if spec.column is not None:
                refs.append((name, spec.column))
            if spec.unit_column is not None:
                refs.append((name, spec.unit_column))
        if self.id_column is not None:
            refs.append(("id_column", self.id_column))
        return refs
