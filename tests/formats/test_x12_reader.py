"""The X12 reader: delimiters, hierarchical levels, packs and rejections."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from plantbus.errors import EdiError
from plantbus.formats.shipnotice import EdiOutcome
from plantbus.formats.x12 import read_x12
from plantbus.formats.x12.segments import read_delimiters, split_segments

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PALLET = "106141411234567897"
CARTON = "037600123450000014"

SHIP_NOTICE = [
    "BSN*00*ASN-77*20260301*0930",
    "DTM*011*20260301*0800*ET",
    "DTM*017*20260303*1400",
    "HL*1**S",
    "TD5*B*2*DHLX*M",
    "N1*SU*Acme Metals*92*SUP-100",
    "N1*ST*Plant One*92*P1",
    "HL*2*1*O",
    "PRF*PO-4711",
    "HL*3*2*T",
    f"MAN*GM*00{PALLET}",
    "HL*4*3*P",
    f"MAN*GM*{CARTON}",
    "HL*5*4*I",
    "LIN*1*BP*C-200*VP*ACM-200*LT*LOT-9",
    "SN1**12.5*KG",
    "HL*6*4*I",
    "LIN*2*BP*C-201",
    "SN1**3*EA",
    "REF*SE*SN-1",
    "REF*SE*SN-2",
    "REF*SE*SN-3",
    "HL*7*2*I",
    "LIN*3*IN*C-202",
    "SN1**4*PC",
    "REF*LT*LOT-3",
    "CTT*3",
]


def isa(element: str, component: str, control: str, ack: str = "0") -> str:
    fields = [
        "ISA", "00", " " * 10, "00", " " * 10, "ZZ", "SUPPLIER".ljust(15),
        "ZZ", "PLANTBUS".ljust(15), "260301", "0930", "^", "00501", control, ack,
        "P", component,
    ]  # fmt: skip
    return element.join(fields)


def interchange(
    body: list[str],
    *,
    element: str = "*",
    terminator: str = "~",
    component: str = ">",
    line_break: str = "\r\n",
    control: str = "000000101",
    set_count: str | None = None,
    group_control: str = "55",
) -> bytes:
    count = set_count or str(len(body) + 2)
    segments = [
        isa("*", component, control),
        f"GS*SH*SUPPLIER*PLANTBUS*20260301*0930*{group_control}*X*005010",
        "ST*856*0001",
        *body,
        f"SE*{count}*0001",
        "GE*1*55",
        f"IEA*1*{control}",
    ]
    text = "".join(
        segment.replace("*", element) + terminator + line_break for segment in segments
    )
    return text.encode("utf-8")


def read(data: bytes, **options: object) -> EdiOutcome:
    return read_x12(data, "test.x12", source="urn:test", now=NOW, **options)  # type: ignore[arg-type]


def acknowledgement_notes(outcome: EdiOutcome) -> list[str]:
    """Return the TA1 and AK segments of an acknowledgement."""
    assert outcome.acknowledgement is not None
    text = outcome.acknowledgement.decode("utf-8")
    delimiters = read_delimiters(text, "acknowledgement")
    return [
        "*".join([s.tag, *s.elements])
        for s in split_segments(text, delimiters)
        if s.tag.startswith(("AK", "TA1"))
    ]


def test_x12_reader_packs_lots_serials_and_dates() -> None:
    outcome = read(interchange(SHIP_NOTICE))

    assert outcome.rejections == []
    (event,) = outcome.events
    data = event.data
    assert data["asn_id"] == "ASN-77"
    assert data["supplier"] == "SUP-100"
    assert data["supplier_name"] == "Acme Metals"
    assert data["carrier"] == "DHLX"
    assert data["ship_date"] == "2026-03-01T13:00:00Z"
    assert data["expected_at"] == "2026-03-03T14:00:00Z"
    assert event.time == "2026-03-01T09:30:00Z"
    assert data["packs"] == [
        {"sscc": PALLET, "level": "tare"},
        {"sscc": CARTON, "level": "pack", "parent_sscc": PALLET},
    ]
    assert data["lines"] == [
        {
            "item": "C-200",
            "supplier_item": "ACM-200",
            "quantity": {"value": "12.5", "unit": "kg"},
            "lot": "LOT-9",
            "sscc": CARTON,
            "purchase_order": "PO-4711",
        },
        {
            "item": "C-201",
            "quantity": {"value": "3", "unit": "u"},
            "serials": ["SN-1", "SN-2", "SN-3"],
            "sscc": CARTON,
            "purchase_order": "PO-4711",
        },
        {
            "item": "C-202",
            "quantity": {"value": "4", "unit": "u"},
            "lot": "LOT-3",
            "purchase_order": "PO-4711",
        },
    ]


def test_x12_reader_default_zone_without_code() -> None:
    outcome = read(interchange(SHIP_NOTICE), zone=ZoneInfo("Europe/Berlin"))

    data = outcome.events[0].data
    assert data["expected_at"] == "2026-03-03T13:00:00Z"
    assert data["ship_date"] == "2026-03-01T13:00:00Z"


@pytest.mark.parametrize(
    ("element", "terminator", "component", "line_break"),
    [
        ("*", "~", ">", "\r\n"),
        ("*", "~", ">", "\n"),
        ("*", "~", ">", ""),
        ("|", "\n", "^", ""),
        ("!", "'", ":", "\r\n"),
        ("\x1d", "\x1c", "\x1f", ""),
    ],
)
def test_x12_reader_delimiters_from_isa_any_layout(
    element: str, terminator: str, component: str, line_break: str
) -> None:
    reference = read(interchange(SHIP_NOTICE)).events[0]
    data = interchange(
        SHIP_NOTICE,
        element=element,
        terminator=terminator,
        component=component,
        line_break=line_break,
    )

    outcome = read(data)

    assert outcome.events[0].data == reference.data
    assert outcome.events[0].id == reference.id
    assert outcome.acknowledgement is not None
    text = outcome.acknowledgement.decode("utf-8")
    assert text[3] == element
    assert text[104:106] == component + terminator
    assert "AK5" + element + "A" + terminator in text


def test_x12_reader_rejects_bad_sscc() -> None:
    body = [s.replace(CARTON, CARTON[:-1] + "9") for s in SHIP_NOTICE]

    outcome = read(interchange(body))

    assert outcome.events == []
    assert acknowledgement_notes(outcome) == [
        "AK1*SH*55",
        "AK2*856*0001",
        "AK3*MAN*14**8",
        f"AK4*2**7*{CARTON[:-1]}9",
        "AK5*R*5",
        "AK9*R*1*1*0",
    ]
    (rejection,) = outcome.rejections
    assert "segment MAN at position 14 element 02" in rejection.message
    assert "GS1 check digit" in rejection.message


def test_x12_reader_decimal_comma_quantity_rejected() -> None:
    body = [s.replace("SN1**12.5*KG", "SN1**12,5*KG") for s in SHIP_NOTICE]

    outcome = read(interchange(body))

    assert "AK3*SN1*17**8" in acknowledgement_notes(outcome)
    assert "AK4*2**6*12,5" in acknowledgement_notes(outcome)


def test_x12_reader_rejects_two_lots() -> None:
    body = [*SHIP_NOTICE[:-1], "REF*LT*LOT-4", "CTT*3"]

    outcome = read(interchange(body))

    assert "AK3*REF*28**5" in acknowledgement_notes(outcome)
    assert "more than one lot" in outcome.rejections[0].message


def test_x12_reader_unknown_parent_level_rejected() -> None:
    body = [s.replace("HL*7*2*I", "HL*7*9*I") for s in SHIP_NOTICE]

    outcome = read(interchange(body))

    assert "AK3*HL*24**8" in acknowledgement_notes(outcome)
    assert "AK4*2**7*9" in acknowledgement_notes(outcome)


def test_x12_reader_segment_count_mismatch_rejected() -> None:
    outcome = read(interchange(SHIP_NOTICE, set_count="5"))

    assert outcome.events == []
    assert "AK5*R*4" in acknowledgement_notes(outcome)
    assert "SE01 is '5'" in outcome.rejections[0].message


def test_x12_reader_group_control_mismatch_rejects_group() -> None:
    outcome = read(interchange(SHIP_NOTICE, group_control="56"))

    assert outcome.events == []
    assert acknowledgement_notes(outcome)[-1] == "AK9*R*1*1*1*4"


def test_x12_reader_missing_trailer_gives_ta1() -> None:
    data = interchange(SHIP_NOTICE).rsplit(b"IEA", 1)[0]

    outcome = read(data)

    assert outcome.events == []
    assert acknowledgement_notes(outcome) == ["TA1*000000101*260301*0930*R*023"]


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        (b"", "starts with the ISA segment"),
        (b"ISA*00*", "must have 16 elements"),
        (b"ISA" + b"A" * 120, "must not be a letter, digit or blank"),
    ],
)
def test_x12_reader_unreadable_header_raises(data: bytes, rule: str) -> None:
    with pytest.raises(EdiError) as caught:
        read(data)

    assert rule in caught.value.rule


def test_x12_reader_control_character_rejected() -> None:
    body = [s.replace("LIN*2*BP*C-201", "LIN*2*BP*C-2\x0701") for s in SHIP_NOTICE]

    outcome = read(interchange(body))

    assert outcome.events == []
    assert "AK3*LIN*19**8" in acknowledgement_notes(outcome)
    assert "AK4*3**6*C-2\x0701" in acknowledgement_notes(outcome)
