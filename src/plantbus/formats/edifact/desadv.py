"""Read the content of an EDIFACT DESADV message into a `ShipNotice`.

The message is read in order. CPS opens a packing level (hierarchical id and
parent id); PAC, PCI and GIN before the first LIN of a level describe its
package, whose SSCC is GIN qualifier BJ. LIN opens a line; PIA, QTY (qualifier
12, despatch quantity), RFF (ON, purchase order) and GIN (BX batch or lot, BN
serial, BJ SSCC) after it belong to that line. Header DTM 11 is the despatch
date, 17 or 132 the expected arrival, 137 the document date.
"""

from __future__ import annotations

import re
from datetime import datetime, tzinfo

from plantbus.formats.edifact.reader import (
    INVALID_DECIMAL,
    INVALID_VALUE,
    MISSING,
    MISSING_DIGIT_BEFORE_DECIMAL,
    VALUE_NOT_SUPPORTED,
    Note,
    Segment,
)
from plantbus.formats.shipnotice import (
    ShipNotice,
    ShipNoticeLine,
    ShipNoticePack,
    decimal_text,
    normalise_sscc,
    sscc_check_digit_valid,
    unit_symbol,
)

# Unit symbol of a QTY without a unit code: one piece.
DEFAULT_UNIT = "u"
_DATE_FORMATS = {"102": "%Y%m%d", "203": "%Y%m%d%H%M", "204": "%Y%m%d%H%M%S"}


class MessageRejected(Exception):
    """Internal: the message broke a rule, and `note` names segment and element."""

    def __init__(self, note: Note) -> None:
        super().__init__(note.describe())
        self.note = note


def read_desadv(
    segments: list[Segment], *, default_supplier: str, zone: tzinfo
) -> ShipNotice:
    """Read one DESADV (UNH to UNT); raise MessageRejected at the first error."""
    bgm = next((s for s in segments if s.tag == "BGM"), None)
    if bgm is None or not bgm.component(2).strip():
        where = bgm or segments[0]
        raise MessageRejected(
            Note(where.tag if bgm else "BGM", where.position, MISSING,
                 "BGM element 2 (document number) is mandatory: it is the ASN id",
                 2 if bgm else None, 1 if bgm else None, "")
        )  # fmt: skip
    notice = ShipNotice(asn_id=bgm.component(2).strip(), supplier=default_supplier)
    _Walk(notice, zone).run(segments)
    if not notice.lines:
        raise MessageRejected(
            Note("LIN", segments[-1].position, MISSING,
                 "the DESADV has no LIN line with a QTY despatch quantity")
        )  # fmt: skip
    return notice


class _Walk:
    def __init__(self, notice: ShipNotice, zone: tzinfo) -> None:
        self.notice = notice
        self.zone = zone
        self.header_order: str | None = None
        self.level_sscc: dict[str, str] = {}
        self.level: str | None = None
        self.level_parent: str | None = None
        self.line: ShipNoticeLine | None = None
        self.line_segment: Segment | None = None

    def run(self, segments: list[Segment]) -> None:
        for segment in segments:
            handler = getattr(self, f"on_{segment.tag.lower()}", None)
            if handler is not None:
                handler(segment)
        self.close_line()

    def on_dtm(self, segment: Segment) -> None:
        if self.level is not None or self.line is not None:
            return
        qualifier = segment.component(1, 1)
        fields = {"11": "ship_date", "17": "expected_at", "132": "expected_at",
                  "137": "issued_at"}  # fmt: skip
        name = fields.get(qualifier)
        if name and getattr(self.notice, name) is None:
            setattr(self.notice, name, self.moment(segment))

    def on_rff(self, segment: Segment) -> None:
        if segment.component(1, 1) != "ON":
            return
        order = segment.component(1, 2).strip() or None
        if self.line is not None:
            self.line.purchase_order = order
        elif self.header_order is None:
            self.header_order = order

    def on_nad(self, segment: Segment) -> None:
        if segment.component(1) not in ("SU", "SE") or self.notice.supplier_name:
            return
        code = segment.component(2, 1).strip()
        # Only C080 is a party name, because C058 contains free-form address lines.
        name = segment.component(4, 1).strip()
        if code:
            self.notice.supplier = code
        self.notice.supplier_name = name or None

    def on_tdt(self, segment: Segment) -> None:
        carrier = segment.component(5, 1) or segment.component(5, 4)
        if carrier.strip() and not self.notice.carrier:
            self.notice.carrier = carrier.strip()

    def on_cps(self, segment: Segment) -> None:
        self.close_line()
        self.level = segment.component(1).strip() or None
        self.level_parent = segment.component(2).strip() or None

    def on_lin(self, segment: Segment) -> None:
        self.close_line()
        self.line = ShipNoticeLine(item="", quantity="", unit=DEFAULT_UNIT)
        self.line_segment = segment
        self.line.sscc = self.level_sscc.get(self.level or "")
        self.line.purchase_order = self.header_order
        item = segment.component(3, 1).strip()
        if item:
            self.identify(item, segment.component(3, 2))

    def on_pia(self, segment: Segment) -> None:
        if self.line is None:
            return
        for number in range(2, len(segment.elements) + 1):
            value = segment.component(number, 1).strip()
            if value:
                self.identify(value, segment.component(number, 2), pia=True)

    def identify(self, value: str, kind: str, pia: bool = False) -> None:
        line = self.line
        assert line is not None
        if kind == "NB":
            line.lot = value
        elif kind == "SN":
            line.serials.append(value)
        elif kind == "IN":
            if line.item and line.item != value:
                line.supplier_item = line.supplier_item or line.item
            line.item = value
        elif not line.item:
            line.item = value
        elif kind == "SA" or (pia and not line.supplier_item):
            line.supplier_item = value

    def on_qty(self, segment: Segment) -> None:
        if self.line is None or segment.component(1, 1) != "12":
            return
        raw = segment.component(1, 2)
        # ISO 9735 allows a comma or a point as the decimal mark, whatever UNA
        # names, with at least one digit on each side of it.
        exact = re.fullmatch(r"[0-9]+([.,][0-9]+)?", raw)
        value = decimal_text(raw.replace(",", ".")) if exact else None
        if value is None:
            code = INVALID_VALUE
            if re.fullmatch(r"[.,][0-9]+", raw):
                code = MISSING_DIGIT_BEFORE_DECIMAL
            elif re.fullmatch(r"[0-9.,]+", raw):
                code = INVALID_DECIMAL
            raise MessageRejected(
                Note("QTY", segment.position, code,
                     "the despatch quantity must be a non-negative decimal such "
                     "as '12,5' or '12.5', without thousands separators",
                     1, 2, raw)
            )  # fmt: skip
        self.line.quantity = value
        unit = segment.component(1, 3).strip()
        self.line.unit = unit_symbol(unit) if unit else DEFAULT_UNIT

    def on_gin(self, segment: Segment) -> None:
        kind = segment.component(1)
        values = [
            segment.component(n, 1).strip()
            for n in range(2, len(segment.elements) + 1)
            if segment.component(n, 1).strip()
        ]
        if kind == "BJ":
            labels = [
                self.sscc(segment, n)
                for n in range(2, len(segment.elements) + 1)
                if segment.component(n, 1).strip()
            ]
            if self.line is not None:
                self.line.sscc = labels[0] if labels else self.line.sscc
                return
            for label in labels:
                parent = self.level_sscc.get(self.level_parent or "")
                self.notice.packs.append(ShipNoticePack(label, "pack", parent))
                self.level_sscc.setdefault(self.level or "", label)
        elif self.line is not None and kind == "BX" and values:
            self.line.lot = values[0]
        elif self.line is not None and kind == "BN":
            self.line.serials.extend(values)

    def sscc(self, segment: Segment, number: int) -> str:
        raw = segment.component(number, 1).strip()
        label = normalise_sscc(raw)
        if not sscc_check_digit_valid(label):
            raise MessageRejected(
                Note("GIN", segment.position, INVALID_VALUE,
                     "GIN qualifier BJ needs an SSCC of 18 digits with a valid "
                     "GS1 check digit", number, 1, raw)
            )  # fmt: skip
        return label

    def close_line(self) -> None:
        line, segment = self.line, self.line_segment
        self.line = None
        if line is None or segment is None:
            return
        if not line.item:
            raise MessageRejected(
                Note("LIN", segment.position, MISSING,
                     "the line has no item number in LIN or PIA", 3, 1, "")
            )  # fmt: skip
        if not line.quantity:
            raise MessageRejected(
                Note("QTY", segment.position, MISSING,
                     f"line {segment.component(1)!r} has no QTY with qualifier 12 "
                     "(despatch quantity)")
            )  # fmt: skip
        self.notice.lines.append(line)

    def moment(self, segment: Segment) -> datetime:
        value, form = segment.component(1, 2), segment.component(1, 3) or "102"
        pattern = _DATE_FORMATS.get(form)
        if pattern is None:
            raise MessageRejected(
                Note("DTM", segment.position, VALUE_NOT_SUPPORTED,
                     "DTM format qualifier must be 102, 203 or 204", 1, 3, form)
            )  # fmt: skip
        try:
            moment = datetime.strptime(value, pattern)
        except ValueError:
            raise MessageRejected(
                Note("DTM", segment.position, INVALID_VALUE,
                     f"the date does not match format {form}", 1, 2, value)
            ) from None  # fmt: skip
        return moment.replace(tzinfo=self.zone)
