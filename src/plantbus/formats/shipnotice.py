"""Advance ship notices read from X12 856 or EDIFACT DESADV, as one event each.

Both readers fill the same `ShipNotice` model, and `ship_notice_event` turns it
into a `supply.asn.received.v1` event. The event id is a uuid5 of the EDI
standard, the interchange sender, the interchange control number and the ASN
id, so the same interchange read twice gives the same id and the log keeps
one event.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from plantbus.events.envelope import Event, format_time, utc_now

EVENT_TYPE = "supply.asn.received.v1"

# Fixed namespace of the event ids, so that ids stay the same across versions.
EVENT_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:plantbus:formats:edi:asn")

# X12 unit codes (data element 355) and UN/ECE Recommendation 20 codes, mapped
# to the unit symbols that plantbus events and Tryton use. A code outside this
# table is passed on unchanged, so that the sink reports it by name.
UNIT_SYMBOLS = {
    "EA": "u",
    "PC": "u",
    "PCE": "u",
    "C62": "u",
    "H87": "u",
    "KG": "kg",
    "KGM": "kg",
    "GR": "g",
    "GRM": "g",
    "LB": "lb",
    "LBR": "lb",
    "OZ": "oz",
    "ONZ": "oz",
    "LT": "l",
    "LTR": "l",
    "MR": "m",
    "MTR": "m",
    "CMT": "cm",
    "CM": "cm",
    "MMT": "mm",
    "FT": "ft",
    "FOT": "ft",
    "IN": "in",
    "INH": "in",
    "TNE": "t",
}


@dataclass(slots=True)
class ShipNoticeLine:
    """One item of a ship notice, with the pack that contains it."""

    item: str
    quantity: str
    unit: str
    supplier_item: str | None = None
    lot: str | None = None
    serials: list[str] = field(default_factory=list)
    sscc: str | None = None
    purchase_order: str | None = None


@dataclass(slots=True)
class ShipNoticePack:
    """A labelled pack or pallet (X12 HL level P or T, EDIFACT CPS/PAC)."""

    sscc: str
    level: str
    parent_sscc: str | None = None


@dataclass(slots=True)
class ShipNotice:
    """The content of one 856 transaction set or DESADV message."""

    asn_id: str
    supplier: str
    supplier_name: str | None = None
    ship_date: datetime | None = None
    expected_at: datetime | None = None
    issued_at: datetime | None = None
    carrier: str | None = None
    lines: list[ShipNoticeLine] = field(default_factory=list)
    packs: list[ShipNoticePack] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class InterchangeIds:
    """The origin of a ship notice: standard, parties and control numbers."""

    standard: str
    sender: str
    receiver: str
    interchange: str
    group: str | None
    message: str


def has_control_character(text: str) -> bool:
    """Return True when `text` contains a C0 or C1 control character."""
    return any(ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F for char in text)


def is_ascii_digits(text: str) -> bool:
    """Return True when `text` is not empty and has only the digits 0 to 9."""
    # str.isdigit() also accepts digits such as '²' that int() rejects.
    return text.isascii() and text.isdigit()


def unit_symbol(code: str) -> str:
    """Return the plantbus unit symbol of an X12 or UN/ECE unit code."""
    return UNIT_SYMBOLS.get(code.upper(), code)


def sscc_check_digit_valid(sscc: str) -> bool:
    """Return True when `sscc` has 18 digits and a correct GS1 check digit."""
    if len(sscc) != 18 or not is_ascii_digits(sscc):
        return False
    digits = [int(char) for char in sscc[:17]]
    # GS1 weights alternate 3 and 1, starting with 3 at the rightmost data digit.
    total = sum(d * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return (10 - total % 10) % 10 == int(sscc[17])


def normalise_sscc(value: str) -> str:
    """Drop the GS1 application identifier '00' in front of an 18-digit SSCC."""
    if len(value) == 20 and value.startswith("00"):
        return value[2:]
    return value


def decimal_text(value: str) -> str | None:
    """Return a canonical non-negative decimal string, or None when invalid."""
    if not value or not value.isascii() or value.startswith(("+", "-")):
        return None
    if not all(char.isdigit() or char == "." for char in value):
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        return None
    return format(number.normalize(), "f")


def event_id(ids: InterchangeIds, asn_id: str) -> str:
    """Return the event id of an ASN: the same for the same interchange."""
    name = f"{ids.standard}|{ids.sender}|{ids.interchange}|{asn_id}"
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, name))


def ship_notice_event(
    notice: ShipNotice, ids: InterchangeIds, *, source: str, plant: str | None
) -> Event:
    """Build the `supply.asn.received.v1` event of one ship notice."""
    data: dict[str, Any] = {
        "asn_id": notice.asn_id,
        "supplier": notice.supplier,
        "lines": [_line_data(line) for line in notice.lines],
        "edi": {
            "standard": ids.standard,
            "sender": ids.sender,
            "receiver": ids.receiver,
            "interchange": ids.interchange,
            "message": ids.message,
        },
    }
    if ids.group is not None:
        data["edi"]["group"] = ids.group
    optional = {
        "supplier_name": notice.supplier_name,
        "carrier": notice.carrier,
        "ship_date": format_time(notice.ship_date) if notice.ship_date else None,
        "expected_at": format_time(notice.expected_at) if notice.expected_at else None,
    }
    data.update({key: value for key, value in optional.items() if value})
    if notice.packs:
        data["packs"] = [_pack_data(pack) for pack in notice.packs]

    issued = notice.issued_at or notice.ship_date
    return Event(
        id=event_id(ids, notice.asn_id),
        source=source,
        type=EVENT_TYPE,
        data=data,
        subject=notice.asn_id,
        time=format_time(issued) if issued else utc_now(),
        partitionkey=notice.asn_id,
        correlationid=notice.asn_id,
        plant=plant,
    )


def _line_data(line: ShipNoticeLine) -> dict[str, Any]:
    data: dict[str, Any] = {
        "item": line.item,
        "quantity": {"value": line.quantity, "unit": line.unit},
    }
    optional = {
        "supplier_item": line.supplier_item,
        "lot": line.lot,
        "sscc": line.sscc,
        "purchase_order": line.purchase_order,
    }
    data.update({key: value for key, value in optional.items() if value})
    if line.serials:
        data["serials"] = list(line.serials)
    return data


def _pack_data(pack: ShipNoticePack) -> dict[str, Any]:
    data = {"sscc": pack.sscc, "level": pack.level}
    if pack.parent_sscc:
        data["parent_sscc"] = pack.parent_sscc
    return data


@dataclass(frozen=True, slots=True)
class EdiRejection:
    """One rejected interchange, group or message, and the rule it broke."""

    location: str
    message: str

    def describe(self) -> str:
        """Return the rejection as one sentence."""
        return f"{self.location}: {self.message}"


@dataclass(slots=True)
class EdiOutcome:
    """The result of reading one interchange: events, acknowledgement, rejections."""

    events: list[Event]
    acknowledgement: bytes | None
    # Kind of the acknowledgement, used in its file name: '997', 'TA1' or 'CONTRL'.
    acknowledgement_kind: str
    rejections: list[EdiRejection] = field(default_factory=list)
