"""The EDIFACT DESADV reader: packing levels, SSCCs, lots, counts and CONTRL."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from plantbus.errors import EdiError
from plantbus.formats.edifact import read_edifact
from plantbus.formats.shipnotice import EdiOutcome

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PALLET = "106141411234567897"
CARTON = "037600123450000014"

BODY = [
    "BGM+351+DES-88+9",
    "DTM+137:202603010930:203",
    "DTM+11:20260301:102",
    "DTM+132:202603031400:203",
    "RFF+ON:PO-4711",
    "NAD+SU+SUP-100::9++Smith?+Sons?: Metals",
    "NAD+ST+P1::9",
    "TDT+20++30++DHLX:172::Express",
    "CPS+1",
    "PAC+1++PX",
    "PCI+33E",
    f"GIN+BJ+{PALLET}",
    "CPS+2+1",
    "PAC+1++CT",
    f"GIN+BJ+{CARTON}",
    "LIN+1++C-200:IN",
    "PIA+1+ACM-200:SA",
    "QTY+12:12,5:KGM",
    "GIN+BX+LOT-9",
    "LIN+2++C-201:IN",
    "QTY+12:3:PCE",
    "RFF+ON:PO-4712",
    "GIN+BN+SN-1+SN-2+SN-3",
    "CNT+2:2",
]


def interchange(
    body: list[str],
    *,
    una: str = "UNA:+,? '",
    count: str | None = None,
    messages: str = "1",
) -> bytes:
    segments = [
        "UNB+UNOC:3+SUPPLIER:14+PLANTBUS:14+260301:0930+IC-5",
        "UNH+M1+DESADV:D:96A:UN",
        *body,
        f"UNT+{count or len(body) + 2}+M1",
        f"UNZ+{messages}+IC-5",
    ]
    return (una + "".join(s + "'" for s in segments)).encode("latin-1")


def read(data: bytes, **options: object) -> EdiOutcome:
    return read_edifact(data, "test.edi", source="urn:test", now=NOW, **options)  # type: ignore[arg-type]


def report(outcome: EdiOutcome) -> list[str]:
    assert outcome.acknowledgement is not None
    return [
        s
        for s in outcome.acknowledgement.decode("latin-1").split("'")
        if s.startswith("UC")
    ]


def test_edifact_desadv_packs_lots_serials() -> None:
    outcome = read(interchange(BODY))

    assert outcome.rejections == []
    (event,) = outcome.events
    assert event.time == "2026-03-01T09:30:00Z"
    assert event.data == {
        "asn_id": "DES-88",
        "supplier": "SUP-100",
        "supplier_name": "Smith+Sons: Metals",
        "carrier": "DHLX",
        "ship_date": "2026-03-01T00:00:00Z",
        "expected_at": "2026-03-03T14:00:00Z",
        "packs": [
            {"sscc": PALLET, "level": "pack"},
            {"sscc": CARTON, "level": "pack", "parent_sscc": PALLET},
        ],
        "lines": [
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
                "purchase_order": "PO-4712",
            },
        ],
        "edi": {
            "standard": "edifact",
            "sender": "SUPPLIER:14",
            "receiver": "PLANTBUS:14",
            "interchange": "IC-5",
            "message": "M1",
        },
    }
    assert report(outcome) == [
        "UCI+IC-5+SUPPLIER:14+PLANTBUS:14+7",
        "UCM+M1+DESADV:D:96A:UN+7",
    ]


def test_edifact_desadv_zone_applies_to_dates() -> None:
    outcome = read(interchange(BODY), zone=ZoneInfo("Europe/Berlin"))

    assert outcome.events[0].data["expected_at"] == "2026-03-03T13:00:00Z"


def test_edifact_desadv_other_service_characters() -> None:
    una = "UNA|*.# !"
    body = [
        s.replace("+", "*").replace(":", "|").replace("?", "#").replace("12,5", "12.5")
        for s in BODY
    ]
    data = (
        una
        + "".join(
            s.replace("+", "*").replace(":", "|") + "!"
            for s in [
                "UNB+UNOC:3+SUPPLIER:14+PLANTBUS:14+260301:0930+IC-5",
                "UNH+M1+DESADV:D:96A:UN",
                *body,
                f"UNT+{len(body) + 2}+M1",
                "UNZ+1+IC-5",
            ]
        )
    ).encode("latin-1")

    outcome = read(data)

    assert outcome.rejections == []
    expected = read(interchange(BODY)).events[0].data
    expected["supplier_name"] = "Smith*Sons| Metals"
    assert outcome.events[0].data == expected
    assert outcome.acknowledgement is not None
    assert outcome.acknowledgement.startswith(b"UNA|*.# !UNB*UNOC|3*PLANTBUS|14*")


def test_edifact_desadv_rejects_bad_sscc() -> None:
    body = [s.replace(CARTON, CARTON[:-1] + "9") for s in BODY]

    outcome = read(interchange(body))

    assert outcome.events == []
    assert report(outcome) == [
        "UCI+IC-5+SUPPLIER:14+PLANTBUS:14+7",
        "UCM+M1+DESADV:D:96A:UN+4",
        "UCS+16+12",
        "UCD+12+2:1",
    ]
    assert "GS1 check digit" in outcome.rejections[0].message


@pytest.mark.parametrize(
    ("quantity", "code"), [("1.234,5", "19"), (",5", "38"), ("12kg", "12")]
)
def test_edifact_desadv_bad_quantity_rejected(quantity: str, code: str) -> None:
    body = [s.replace("QTY+12:12,5:KGM", f"QTY+12:{quantity}:KGM") for s in BODY]

    outcome = read(interchange(body))

    assert report(outcome)[2:] == [f"UCS+19+{code}", f"UCD+{code}+1:2"]


def test_edifact_desadv_segment_count_mismatch_rejected() -> None:
    outcome = read(interchange(BODY, count="7"))

    assert outcome.events == []
    assert report(outcome)[2:] == ["UCS+26+29", "UCD+29+1:1"]


def test_edifact_desadv_message_count_mismatch_rejects_interchange() -> None:
    outcome = read(interchange(BODY, messages="2"))

    assert outcome.events == []
    assert report(outcome) == ["UCI+IC-5+SUPPLIER:14+PLANTBUS:14+4+29+UNZ+1:1"]


def test_edifact_desadv_without_unb_raises() -> None:
    with pytest.raises(EdiError) as caught:
        read(b"UNH+1+DESADV:D:96A:UN'BGM+351+X'UNT+3+1'")

    assert "UNB names the syntax identifier" in caught.value.rule


def test_edifact_desadv_control_character_rejected() -> None:
    body = [s.replace("LIN+2++C-201:IN", "LIN+2++C-2\x0701:IN") for s in BODY]

    outcome = read(interchange(body))

    assert outcome.events == []
    assert report(outcome)[2:] == ["UCS+21+21", "UCD+21+3:1"]
