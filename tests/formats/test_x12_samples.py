"""Every X12 sample file gives the exact events or the exact acknowledgement."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from plantbus.errors import EdiError
from plantbus.events.catalogue import Catalogue
from plantbus.formats.shipnotice import EdiOutcome
from plantbus.formats.x12 import read_x12
from plantbus.formats.x12.segments import read_delimiters, split_segments

NOW = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
SOURCE = "urn:plantbus:source:edi-in"


def read(samples_dir: Path, name: str) -> EdiOutcome:
    (path,) = (samples_dir / "edi" / "x12").rglob(name)
    data = path.read_bytes()
    return read_x12(data, name, source=SOURCE, now=NOW)


def acknowledgement_notes(outcome: EdiOutcome) -> list[str]:
    """Return the TA1 and AK segments of an acknowledgement, split by its delimiters."""
    assert outcome.acknowledgement is not None
    text = outcome.acknowledgement.decode("utf-8")
    delimiters = read_delimiters(text, "acknowledgement")
    segments = split_segments(text, delimiters)
    assert segments[-1].tag == "IEA"
    return [
        "*".join([s.tag, *s.elements])
        for s in segments
        if s.tag == "TA1" or s.tag.startswith("AK")
    ]


def u(value: str, unit: str = "u") -> dict[str, str]:
    return {"value": value, "unit": unit}


ACCEPTED: dict[str, tuple[str, str, dict[str, Any]]] = {
    "856_Example1.txt": (
        "7daaf107-2736-5047-bbd7-f65357a00238",
        "2001-04-20T14:21:00Z",
        {
            "asn_id": "123456",
            "supplier": "ACME ELECT00",
            "supplier_name": "ACME",
            "ship_date": "2001-04-20T14:21:00Z",
            "expected_at": "2001-04-22T08:00:00Z",
            "lines": [
                {
                    "item": "1234-123456",
                    "quantity": u("16"),
                    "purchase_order": "123456",
                },
                {
                    "item": "1234-654321",
                    "quantity": u("23", "lb"),
                    "purchase_order": "123456",
                },
                {
                    "item": "1234-223456",
                    "quantity": u("16"),
                    "purchase_order": "123456",
                },
            ],
            "edi": {
                "standard": "x12",
                "sender": "01:201495124",
                "receiver": "01:207663412",
                "interchange": "000000001",
                "group": "1",
                "message": "0001",
            },
        },
    ),
    "856_Example3.txt": (
        "47414531-3cc2-5eaf-a491-1c452c663af0",
        "2005-04-12T20:52:00Z",
        {
            "asn_id": "146940",
            "supplier": "1002300",
            "carrier": "AVRT",
            "ship_date": "2005-04-12T20:52:00Z",
            "lines": [
                {
                    "item": "000 260 056 524",
                    "supplier_item": "abc123",
                    "quantity": u("1596"),
                    "purchase_order": "5500005194",
                },
                {
                    "item": "000 260 120 524",
                    "supplier_item": "ZZZ123",
                    "quantity": u("1152"),
                    "purchase_order": "5500005194",
                },
                {
                    "item": "000 260 121 524",
                    "supplier_item": "XXX123",
                    "quantity": u("1440"),
                    "purchase_order": "5500005194",
                },
            ],
            "edi": {
                "standard": "x12",
                "sender": "ZZ:123456789",
                "receiver": "01:965061609",
                "interchange": "000000027",
                "group": "25",
                "message": "0022",
            },
        },
    ),
    "856_Example4.txt": (
        "f8b126fc-497e-5184-94b8-d3dae906dc3b",
        "2011-09-09T19:32:35Z",
        {
            "asn_id": "DELIVERYNUMBER",
            "supplier": "787347434",
            "carrier": "NONE",
            "ship_date": "2011-09-09T00:00:00Z",
            "expected_at": "2011-09-13T00:00:00Z",
            "lines": [
                {
                    "item": item,
                    "supplier_item": vendor,
                    "quantity": u(quantity),
                    "purchase_order": "PO NUMBER",
                }
                for item, vendor, quantity in [
                    ("100014544", "25555120", "10"),
                    ("100014545", "25555130", "5"),
                    ("100019109", "20520130", "10"),
                    ("100019110", "20520150", "20"),
                    ("100019111", "21520150", "5"),
                    ("100019112", "20520160", "3"),
                    ("100014546", "25555150", "12"),
                ]
            ],
            "edi": {
                "standard": "x12",
                "sender": "01:787347434",
                "receiver": "12:RECEIVERID",
                "interchange": "000001054",
                "group": "414",
                "message": "0414",
            },
        },
    ),
}

ACKNOWLEDGED: dict[str, tuple[str, ...]] = {
    "856_Example1.txt": (
        "TA1*000000001*010420*1312*A*000",
        "AK1*SH*1",
        "AK2*856*0001",
        "AK5*A",
        "AK9*A*1*1*1",
    ),
    "856_Example3.txt": ("AK1*SH*25", "AK2*856*0022", "AK5*A", "AK9*A*1*1*1"),
    "856_Example4.txt": ("AK1*SH*414", "AK2*856*0414", "AK5*A", "AK9*A*1*1*1"),
}

# File: the acknowledgement's TA1 or AK segments, and text in each rejection.
REJECTED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "856_Example2.txt": (
        (
            "TA1*000000001*010420*1312*A*000",
            "AK1*SH*1",
            "AK2*856*0001",
            "AK3*BSN*2**8",
            "AK4*2**1",
            "AK5*R*5",
            "AK9*R*1*1*0",
        ),
        ("segment BSN at position 2 element 02 value '': BSN02",),
    ),
    "846_Example1.txt": (
        ("TA1*000001979*040811*0014*R*016",),
        ("ISA11 is ' ': expected 'U' or a repetition separator",),
    ),
    "846_Example2.txt": (
        ("TA1*000001979*040811*0014*R*016",),
        ("ISA11 is ' ': expected 'U' or a repetition separator",),
    ),
    "850_Example1_PGWGlass.txt": (
        ("AK1*PO*245", "AK2*850*0001", "AK5*R*1", "AK9*R*1*1*0"),
        ("ST01 is '850': this hub reads only 856",),
    ),
    "850_Example2_Adobe_TLP.txt": (
        ("AK1*PO*11464", "AK2*850*114640004", "AK5*R*1", "AK9*R*1*1*0"),
        ("ST01 is '850'",),
    ),
    "850_Example3_Adobe_CLP.txt": (
        ("TA1*000511461*100614*1600*R*006",),
        ("ISA06 is '00000000      ': expected a sender id of 15 characters",),
    ),
    "850_Example4_Adobe_ShrinkWrapped.txt": (
        ("TA1*638504569*060521*0300*R*006",),
        ("ISA06 is 'PARTNER       '",),
    ),
    "850_From_aojuk.txt": (
        ("AK1*PO*83", "AK2*850*0083", "AK5*R*1", "AK9*R*1*1*0"),
        ("ST01 is '850'",),
    ),
    "852_AftermarketExample.txt": (
        ("AK1*PD*132", "AK2*852*1357", "AK5*R*1", "AK9*R*1*1*0"),
        ("ST01 is '852'",),
    ),
    "852_hdexchange.txt": (
        ("TA1*000000002*990104*1521*R*001",),
        ("IEA02 is '000000002~' but ISA13 is '000000002'",),
    ),
    "855_855SSimmons.txt": (
        (
            "AK1*PR*76417",
            "AK2*855*0001",
            "AK5*R*1",
            "AK2*855*0002",
            "AK5*R*1",
            "AK9*R*2*2*0",
        ),
        ("ST01 is '855'", "ST01 is '855'"),
    ),
    "855_Example1_Adobe.txt": (
        ("AK1*PR*855336885", "AK2*855*852281220", "AK5*R*1", "AK9*R*1*1*0"),
        ("ST01 is '855'",),
    ),
    "860_Example1.txt": (
        ("TA1*000000568*080310*1500*R*006",),
        ("ISA06 is 'SENDERID      '",),
    ),
    "866_Sample1.txt": (
        (
            "TA1*000000002*990104*1521*A*000",
            "AK1*SQ*1",
            "AK2*866*0001",
            "AK5*R*1",
            "AK9*R*1*1*0",
        ),
        ("ST01 is '866'",),
    ),
    **{
        f"867_Example{n}.txt": (
            (
                "TA1*000000002*990104*1521*A*000",
                "AK1*PT*1",
                f"AK2*867*100{n}",
                "AK5*R*1",
                "AK9*R*1*1*0",
            ),
            ("ST01 is '867'",),
        )
        for n in (1, 2, 3)
    },
    "940_simplot.txt": (
        ("TA1*398161180*111214*1400*R*001",),
        ("IEA02 is '940001777' but ISA13 is '398161180'",),
    ),
    "945_inter-americanproducts.txt": (
        ("TA1*000000031*021104*1405*R*024",),
        ("GS03 at position 2 is '': expected an application receiver code",),
    ),
    "asn856.txt": (
        ("TA1*000003438*101127*1719*R*001",),
        ("IEA02 is '000000049' but ISA13 is '000003438'",),
    ),
    "po850.txt": (
        ("AK1*PO*1421", "AK2*850*000000010", "AK5*R*1*4", "AK9*R*1*1*0"),
        ("ST01 is '850'", "SE01 is '33' but transaction set '000000010' has 21"),
    ),
    "x12.base.txt": (
        (
            "AK1*SH*00",
            "AK2*AAA*0001",
            "AK5*R*6*4",
            "AK2*BBB*0002",
            "AK5*R*6*4",
            "AK2*YYZ*0099",
            "AK5*R*6*4",
            "AK9*R*1*3*0*5",
            "AK1*SH*99",
            "AK2*AAA*0003",
            "AK5*R*6*4",
            "AK9*R*1*1*0",
        ),
        (
            "ST01 is 'AAA': expected a transaction set identifier of three digits",
            "SE01 is '1' but transaction set '0001' has 3 segments",
            "ST01 is 'BBB'",
            "SE01 is '1' but transaction set '0002' has 3 segments",
            "ST01 is 'YYZ'",
            "SE01 is '1' but transaction set '0099' has 3 segments",
            "GE01 is '1' but group '00' has 3 transaction sets",
            "ST01 is 'AAA'",
            "SE01 is '1' but transaction set '0003' has 3 segments",
        ),
    ),
    "x12.wrong.GS.txt": (
        ("TA1*000000049*101127*1719*R*024",),
        ("segment 'XX' at position 2 is found where a GS group header",),
    ),
}

# Files that no EDI reader of plantbus can read, with the reason.
UNREADABLE = {
    "x12.missing.ISA.txt": "no ISA segment, so its delimiters are unknown",
    "License.html": "licence text of the sample collection",
    "LICENSE": "licence text of the sample collection",
}


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_x12_sample_856_gives_exact_event(samples_dir: Path, name: str) -> None:
    event_id, time, data = ACCEPTED[name]

    outcome = read(samples_dir, name)

    assert outcome.rejections == []
    (event,) = outcome.events
    assert event.id == event_id
    assert event.type == "supply.asn.received.v1"
    assert event.time == time
    assert event.subject == data["asn_id"]
    assert event.partitionkey == data["asn_id"]
    assert event.source == SOURCE
    assert event.data == data
    Catalogue.load().validate(event)
    assert tuple(acknowledgement_notes(outcome)) == ACKNOWLEDGED[name]


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_x12_sample_rejected_exact_notes(samples_dir: Path, name: str) -> None:
    expected_notes, reasons = REJECTED[name]

    outcome = read(samples_dir, name)

    assert outcome.events == []
    assert tuple(acknowledgement_notes(outcome)) == expected_notes
    assert len(outcome.rejections) == len(reasons)
    for rejection, reason in zip(outcome.rejections, reasons, strict=True):
        assert reason in rejection.message


def test_x12_sample_read_twice_same_id(samples_dir: Path) -> None:
    first = read(samples_dir, "856_Example1.txt").events[0]
    second = read(samples_dir, "856_Example1.txt").events[0]

    assert first.id == second.id


def test_x12_sample_missing_isa_raises_edi_error(samples_dir: Path) -> None:
    with pytest.raises(EdiError) as caught:
        read(samples_dir, "x12.missing.ISA.txt")

    assert caught.value.segment == "GS"
    assert caught.value.position == 1
    assert caught.value.value.startswith("GS*SH*4405197800")
    assert "starts with the ISA segment" in caught.value.rule


def test_x12_samples_every_file_covered(samples_dir: Path) -> None:
    files = {p.name for p in (samples_dir / "edi" / "x12").rglob("*") if p.is_file()}
    covered = set(ACCEPTED) | set(REJECTED) | set(UNREADABLE)

    assert files - covered == set(), "sample files without an expected outcome"
    assert covered - files == set(), "expected outcomes for files that are gone"
