"""Read the content of an X12 856 ship notice into a `ShipNotice`.

The 856 is a tree of hierarchical levels (HL): shipment (S), order (O), tare
(T, a pallet), pack (P) and item (I). HL01 numbers a level and HL02 names its
parent. When HL02 is empty, the parent is the nearest earlier level of a
higher rank (S > O > T > P > I), which is how senders that leave HL02 out
mean it. Each item level with an SN1 quantity becomes one line. A line takes
the purchase order (PRF) and the SSCC (MAN*GM) of the nearest level above it
that has one.

The first rule a set breaks ends the reading, and the set is rejected with an
AK3/AK4 note naming the segment, element, value and X12 error code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from plantbus.formats.shipnotice import (
    ShipNotice,
    ShipNoticeLine,
    ShipNoticePack,
    decimal_text,
    has_control_character,
    normalise_sscc,
    sscc_check_digit_valid,
    unit_symbol,
)
from plantbus.formats.x12.dates import InvalidMoment, read_moment
from plantbus.formats.x12.envelope import ElementNote, SegmentNote
from plantbus.formats.x12.segments import Segment

# AK304 segment codes (720) and AK403 element codes (723).
SEGMENT_MANDATORY_MISSING = "3"
SEGMENT_EXCEEDS_MAXIMUM_USE = "5"
SEGMENT_HAS_ELEMENT_ERRORS = "8"
ELEMENT_MANDATORY_MISSING = "1"
ELEMENT_INVALID_CHARACTER = "6"
ELEMENT_INVALID_CODE = "7"

_LEVEL_RANK = {"S": 0, "O": 1, "T": 2, "P": 3, "I": 4}
# LIN product id qualifiers (235), best first for the buyer's own item code.
_BUYER_ITEM = ("BP", "IN", "CB", "SK", "PI")
_SUPPLIER_ITEM = ("VP", "VN", "VA", "MG", "UP", "EN", "UK", "UA")
_SHIP_DATES = ("011",)
_EXPECTED_DATES = ("017", "067", "371")


class SetRejected(Exception):
    """Internal: the set broke a rule; `note` is its AK3/AK4 note."""

    def __init__(self, note: SegmentNote) -> None:
        super().__init__(note.describe())
        self.note = note


@dataclass(slots=True)
class _Level:
    number: str
    kind: str
    parent: _Level | None
    segment: Segment
    children: list[_Level] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)


def element_error(
    segment: Segment, set_position: int, number: int, code: str, rule: str
) -> SetRejected:
    """Return the rejection of one element of a segment."""
    value = segment.element(number)
    return SetRejected(
        SegmentNote(
            segment.tag,
            set_position,
            SEGMENT_HAS_ELEMENT_ERRORS,
            rule,
            ElementNote(number, code, value),
        )
    )


def missing_segment(tag: str, set_position: int, rule: str) -> SetRejected:
    """Return the rejection of a mandatory segment that the set lacks."""
    return SetRejected(SegmentNote(tag, set_position, SEGMENT_MANDATORY_MISSING, rule))


def read_ship_notice(
    segments: list[Segment], *, default_supplier: str, zone: tzinfo
) -> ShipNotice:
    """Read an 856 set (ST to SE); raise SetRejected at the first broken rule."""
    reader = _Reader(segments, zone)
    return reader.read(default_supplier)


class _Reader:
    def __init__(self, segments: list[Segment], zone: tzinfo) -> None:
        self.segments = segments
        self.zone = zone
        self.start = segments[0].position

    def at(self, segment: Segment) -> int:
        """Return the position of `segment` counted from ST as 1."""
        return segment.position - self.start + 1

    def fail(self, segment: Segment, number: int, code: str, rule: str) -> SetRejected:
        return element_error(segment, self.at(segment), number, code, rule)

    def read(self, default_supplier: str) -> ShipNotice:
        self.check_characters()
        bsn = next((s for s in self.segments if s.tag == "BSN"), None)
        if bsn is None:
            raise missing_segment("BSN", 2, "the BSN segment is missing")
        asn_id = bsn.element(2).strip()
        if not asn_id:
            raise self.fail(
                bsn, 2, ELEMENT_MANDATORY_MISSING,
                "BSN02 (shipment identification) is mandatory: it is the ASN id",
            )  # fmt: skip
        notice = ShipNotice(asn_id=asn_id, supplier=default_supplier)
        notice.issued_at = self.moment(bsn, 3, 4, None)

        root = self.levels()
        header = [s for s in self.segments if s.position < root.segment.position]
        self.read_shipment(notice, header + root.segments)
        self.read_items(notice, root, purchase_order=None, sscc=None)
        if not notice.lines:
            raise missing_segment(
                "SN1",
                self.at(self.segments[-1]),
                "the ship notice has no item level (HL03 'I') with an SN1 quantity",
            )
        return notice

    def check_characters(self) -> None:
        for segment in self.segments:
            for number, value in enumerate(segment.elements, start=1):
                if has_control_character(value):
                    raise self.fail(
                        segment, number, ELEMENT_INVALID_CHARACTER,
                        "elements must not contain control characters",
                    )  # fmt: skip

    def levels(self) -> _Level:
        """Build the HL tree; return the shipment level."""
        by_number: dict[str, _Level] = {}
        order: list[_Level] = []
        current: _Level | None = None
        for segment in self.segments:
            if segment.tag != "HL":
                if current is not None:
                    current.segments.append(segment)
                continue
            current = self.level(segment, by_number, order)
            by_number[current.number] = current
            order.append(current)
        if not order:
            raise missing_segment(
                "HL", 3, "the ship notice has no hierarchical level (HL)"
            )
        return order[0]

    def level(
        self, segment: Segment, by_number: dict[str, _Level], order: list[_Level]
    ) -> _Level:
        number, parent_number, kind = (segment.element(i) for i in (1, 2, 3))
        if not number:
            raise self.fail(segment, 1, ELEMENT_MANDATORY_MISSING, "HL01 is mandatory")
        if number in by_number:
            raise self.fail(
                segment, 1, ELEMENT_INVALID_CODE, f"HL01 {number!r} is used twice"
            )
        if kind not in _LEVEL_RANK:
            raise self.fail(
                segment, 3, ELEMENT_INVALID_CODE,
                "HL03 must be one of the levels S, O, T, P or I",
            )  # fmt: skip
        if not order:
            if kind != "S" or parent_number:
                raise self.fail(
                    segment, 3, ELEMENT_INVALID_CODE,
                    "the first hierarchical level must be the shipment (S) "
                    "without a parent",
                )  # fmt: skip
            return _Level(number, kind, None, segment)
        if parent_number:
            parent = by_number.get(parent_number)
            if parent is None:
                raise self.fail(
                    segment, 2, ELEMENT_INVALID_CODE,
                    "HL02 must name the HL01 of an earlier level",
                )  # fmt: skip
        else:
            parent = next(
                (
                    lv
                    for lv in reversed(order)
                    if _LEVEL_RANK[lv.kind] < _LEVEL_RANK[kind]
                ),
                order[0],
            )
        if kind == "S":
            raise self.fail(
                segment, 3, ELEMENT_INVALID_CODE,
                "a ship notice has exactly one shipment level (S)",
            )  # fmt: skip
        created = _Level(number, kind, parent, segment)
        parent.children.append(created)
        return created

    def read_shipment(self, notice: ShipNotice, segments: list[Segment]) -> None:
        suppliers: dict[str, Segment] = {}
        for segment in segments:
            if segment.tag == "N1" and segment.element(1) in ("SU", "SF"):
                suppliers.setdefault(segment.element(1), segment)
            elif segment.tag == "TD5" and not notice.carrier:
                carrier = segment.element(3) or segment.element(5)
                notice.carrier = carrier.strip() or None
            elif segment.tag == "DTM":
                qualifier = segment.element(1)
                if qualifier in _SHIP_DATES and notice.ship_date is None:
                    notice.ship_date = self.moment(segment, 2, 3, 4)
                elif qualifier in _EXPECTED_DATES and notice.expected_at is None:
                    notice.expected_at = self.moment(segment, 2, 3, 4)
        party = suppliers.get("SU") or suppliers.get("SF")
        if party is not None:
            name = party.element(2).strip()
            code = party.element(4).strip() or name
            if code:
                notice.supplier = code
            notice.supplier_name = name or None

    def read_items(
        self,
        notice: ShipNotice,
        level: _Level,
        purchase_order: str | None,
        sscc: str | None,
    ) -> None:
        for segment in level.segments:
            if segment.tag == "PRF" and segment.element(1).strip():
                purchase_order = segment.element(1).strip()
            elif segment.tag == "MAN" and segment.element(1) == "GM":
                label = self.sscc(segment)
                if level.kind in ("P", "T"):
                    notice.packs.append(
                        ShipNoticePack(
                            label, "tare" if level.kind == "T" else "pack", sscc
                        )
                    )
                sscc = label
        if level.kind == "I":
            self.read_item(notice, level, purchase_order, sscc)
        for child in level.children:
            self.read_items(notice, child, purchase_order, sscc)

    def read_item(
        self,
        notice: ShipNotice,
        level: _Level,
        purchase_order: str | None,
        sscc: str | None,
    ) -> None:
        codes: dict[str, str] = {}
        lots: list[tuple[Segment, int]] = []
        serials: list[str] = []
        quantity: Segment | None = None
        for segment in level.segments:
            if segment.tag == "LIN":
                for index in range(2, len(segment.elements), 2):
                    qualifier, value = (
                        segment.element(index),
                        segment.element(index + 1),
                    )
                    if qualifier == "LT" and value:
                        lots.append((segment, index + 1))
                    elif qualifier == "SN" and value:
                        serials.append(value.strip())
                    elif value:
                        codes.setdefault(qualifier, value.strip())
            elif segment.tag == "REF" and segment.element(1) == "LT":
                lots.append((segment, 2))
            elif segment.tag == "REF" and segment.element(1) in ("SE", "LS"):
                serials.append(segment.element(2).strip())
            elif segment.tag == "SN1" and quantity is None:
                quantity = segment

        if quantity is None:
            if level.children:
                return
            raise missing_segment(
                "SN1",
                self.at(level.segment),
                f"item level {level.number!r} has no SN1 quantity",
            )

        if len(lots) > 1:
            extra, _ = lots[1]
            raise SetRejected(
                SegmentNote(
                    extra.tag, self.at(extra), SEGMENT_EXCEEDS_MAXIMUM_USE,
                    f"item level {level.number!r} names more than one lot; put "
                    "each lot in its own item level with its own SN1",
                )
            )  # fmt: skip

        buyer_item = next((codes[q] for q in _BUYER_ITEM if q in codes), None)
        supplier_item = next((codes[q] for q in _SUPPLIER_ITEM if q in codes), None)
        item = buyer_item or supplier_item
        if level.parent is not None and level.parent.kind == "I" and not item:
            item = notice.lines[-1].item if notice.lines else None
        if not item:
            raise missing_segment(
                "LIN",
                self.at(level.segment),
                f"item level {level.number!r} has no LIN product id",
            )

        amount = decimal_text(quantity.element(2))
        if amount is None:
            code = ELEMENT_INVALID_CHARACTER
            if not quantity.element(2):
                code = ELEMENT_MANDATORY_MISSING
            raise self.fail(
                quantity, 2, code,
                "SN102 must be a non-negative decimal number such as '12.5'",
            )  # fmt: skip

        unit = quantity.element(3).strip()
        if not unit:
            raise self.fail(
                quantity, 3, ELEMENT_MANDATORY_MISSING, "SN103 (unit) is mandatory"
            )

        lot = None
        if lots:
            lot_segment, lot_element = lots[0]
            lot = lot_segment.element(lot_element).strip() or None

        notice.lines.append(
            ShipNoticeLine(
                item=item,
                quantity=amount,
                unit=unit_symbol(unit),
                supplier_item=supplier_item if supplier_item != item else None,
                lot=lot,
                serials=[s for s in serials if s],
                sscc=sscc,
                purchase_order=purchase_order,
            )
        )

    def sscc(self, segment: Segment) -> str:
        label = normalise_sscc(segment.element(2).strip())
        if not sscc_check_digit_valid(label):
            raise self.fail(
                segment, 2, ELEMENT_INVALID_CODE,
                "MAN02 with qualifier GM must be an SSCC of 18 digits (optionally "
                "after the application identifier '00') with a valid GS1 check "
                "digit",
            )  # fmt: skip
        return label

    def moment(
        self, segment: Segment, date_at: int, time_at: int, zone_at: int | None
    ) -> datetime | None:
        """Read a date, an optional time and an optional DTM04 time code."""
        try:
            return read_moment(segment, date_at, time_at, zone_at, self.zone)
        except InvalidMoment as exc:
            raise self.fail(segment, exc.element, exc.code, exc.rule) from None
