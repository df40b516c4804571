"""Turn one row of cells into an event, or into the rule that the row broke."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from plantbus.errors import SchemaError
from plantbus.events.catalogue import Catalogue
from plantbus.events.envelope import Event, utc_now
from plantbus.formats.flatfile.layout import ColumnRef, FieldSpec, FlatFileLayout
from plantbus.formats.flatfile.lines import escape_undecodable, has_undecodable
from plantbus.formats.flatfile.values import (
    CellError,
    to_date,
    to_decimal,
    to_integer,
    to_timestamp,
)

# Namespace of the uuid5 event ids of flat-file rows.
ID_NAMESPACE = uuid.UUID("5b1f0c52-8f55-4a52-9d6e-4b0a8f6c2e11")


@dataclass(frozen=True, slots=True)
class Row:
    """The cells of one record, with its first line number and original bytes."""

    line: int
    raw: bytes
    # None marks a fixed-width column that starts past the end of a short line.
    cells: list[str | None]
    # Column name to index in `cells`, from the header or the fixed-width columns.
    index: dict[str, int]

    def cell(self, ref: ColumnRef) -> str | None:
        """Return the stripped text of a column, or None when the row is too short."""
        position = ref - 1 if isinstance(ref, int) else self.index.get(ref)
        if position is None or position >= len(self.cells):
            return None
        cell = self.cells[position]
        return None if cell is None else cell.strip()


@dataclass(frozen=True, slots=True)
class RowProblem:
    """Why a row did not become an event: the column, its value and the rule."""

    line: int
    raw: bytes
    column: str
    value: str | None
    rule: str


class RowMapper:
    """Map rows to events of the layout's type and check them against the catalogue."""

    def __init__(
        self,
        layout: FlatFileLayout,
        catalogue: Catalogue,
        *,
        source: str,
        digest: str,
        plant: str | None,
    ) -> None:
        self.layout = layout
        self.catalogue = catalogue
        self.source = source
        self.digest = digest
        self.plant = plant

    def map(self, row: Row) -> Event | RowProblem:
        """Return the row's event, or the first rule that one of its cells broke."""
        try:
            data = {
                name: value
                for name, spec in self.layout.fields.items()
                if (value := self._value(row, name, spec)) is not None
            }
            subject = self._text(row, "subject", self.layout.subject)
            key = self._text(row, "partition_key", self.layout.partition_key)
            event_id = self._event_id(row)
        except _CellProblem as problem:
            return RowProblem(
                row.line, row.raw, problem.column, problem.value, problem.rule
            )

        time = self.layout.time_field
        event = Event(
            id=event_id,
            source=self.source,
            type=self.layout.event_type,
            data=data,
            subject=subject,
            time=str(data[time]) if time in data else utc_now(),
            plant=self.plant,
            partitionkey=key,
        )
        try:
            self.catalogue.validate(event)
        except SchemaError as exc:
            violation = exc.violations[0]
            field = violation.path.removeprefix("data.").split(".")[0].split("[")[0]
            spec = self.layout.fields.get(field)
            return RowProblem(
                row.line,
                row.raw,
                _label(spec.column) if spec and spec.column is not None else field,
                None if violation.value is None else str(violation.value),
                f"maps to {event.type} whose {violation.describe()}",
            )
        return event

    def _event_id(self, row: Row) -> str:
        ref = self.layout.id_column
        if ref is None:
            name = f"{self.digest}:{row.line}"
        else:
            value = self._cell(row, ref, required=True)
            name = f"{self.layout.event_type}:{value}"
        return str(uuid.uuid5(ID_NAMESPACE, name))

    def _text(self, row: Row, name: str, spec: FieldSpec | None) -> str | None:
        if spec is None:
            return None
        value = self._value(row, name, spec)
        return None if value is None else str(value)

    def _cell(self, row: Row, ref: ColumnRef, *, required: bool) -> str | None:
        text = row.cell(ref)
        if text is None or text == "":
            if required:
                rule = "is missing" if text is None else "is empty"
                raise _CellProblem(_label(ref), text, f"{rule}; the column is required")
            return None
        if has_undecodable(text):
            raise _CellProblem(
                _label(ref),
                escape_undecodable(text),
                f"contains bytes that are not valid {self.layout.encoding}; check "
                f"the layout's `encoding`",
            )
        return text

    def _value(self, row: Row, name: str, spec: FieldSpec) -> Any:
        if spec.value is not None:
            text: str | None = spec.value
            label = f"constant of {name}"
        else:
            assert spec.column is not None
            text = self._cell(row, spec.column, required=spec.required)
            label = _label(spec.column)
        if text is None:
            return None

        try:
            return self._convert(row, text, spec)
        except CellError as exc:
            raise _CellProblem(label, text, str(exc)) from None

    def _convert(self, row: Row, text: str, spec: FieldSpec) -> Any:
        if spec.type == "string":
            return text
        if spec.type == "integer":
            return to_integer(text)
        if spec.type == "decimal":
            return to_decimal(text, self.layout)
        if spec.type == "date":
            return to_date(text, spec.format)
        if spec.type == "datetime":
            return to_timestamp(text, spec.format, self.layout)
        # A quantity: the decimal first, so that its error names its own column.
        amount = to_decimal(text, self.layout)
        unit = spec.unit
        if spec.unit_column is not None:
            unit = self._cell(row, spec.unit_column, required=True)
        return {"value": amount, "unit": unit}


class _CellProblem(Exception):
    def __init__(self, column: str, value: str | None, rule: str) -> None:
        super().__init__(rule)
        self.column = column
        self.value = value
        self.rule = rule


def _label(ref: ColumnRef) -> str:
    return ref if isinstance(ref, str) else f"column {ref}"
