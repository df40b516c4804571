"""Every EDIFACT sample file gives the exact events or the exact CONTRL."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydifact.parser import Parser

from plantbus.events.catalogue import Catalogue
from plantbus.formats.edifact import read_edifact
from plantbus.formats.shipnotice import EdiOutcome

NOW = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
SOURCE = "urn:plantbus:source:edi-in"
FOLDER = ("edi", "edifact", "php-edifact")

DESADV_EVENT = {
    "asn_id": "Y02197250",
    "supplier": "1694901",
    "ship_date": "2016-07-26T00:00:00Z",
    "lines": [
        {
            "item": "9780738507330",
            "quantity": {"value": "1", "unit": "u"},
            "purchase_order": "6877871",
        },
        {
            "item": "9781568361871",
            "quantity": {"value": "1", "unit": "u"},
            "purchase_order": "6905456",
        },
    ],
    "edi": {
        "standard": "edifact",
        "sender": "1556150:31B",
        "receiver": "8888888:ZZ",
        "interchange": "1",
        "message": "142",
    },
}
# Both files carry the same interchange, one with a UNA and UTF-8 text in IMD,
# so they give the same event id and the log keeps one event.
DESADV_EVENT_ID = "723a077b-9fa0-538e-9013-7016d2ffd419"

# File: the CONTRL service segments after UNH, and a text of each rejection.
REPORTS: dict[str, tuple[list[str], list[str]]] = {
    "D96ADESADV.edi": (
        ["UCI+1+1556150:31B+8888888:ZZ+7", "UCM+142+DESADV:0:96A:UN+7"],
        [],
    ),
    "example_utf8.edi": (
        ["UCI+1+1556150:31B+8888888:ZZ+7", "UCM+142+DESADV:0:96A:UN+7"],
        [],
    ),
    "exampleMulti.edi": (
        ["UCI+1+6XPPC+LHPPC+4+2+UNB+1:1"],
        ["value 'IATB': syntax identifier 'IATB' is not supported"],
    ),
    "example_order_ok.edi": (
        [
            "UCI+896+4250159300001:14+unbekannt:14+7",
            "UCM+2019265563+ORDERS:D:01B:UN:EAN010+4",
            "UCS+1+14",
            "UCD+14+2:1",
        ],
        ["message type 'ORDERS' is not supported"],
    ),
    "example_order_error.edi": (
        [
            "UCI+896+4250159300001:14+unbekannt:14+7",
            "UCM+2019265563+ORDERS:D:01B:UN:EAN010+4",
            "UCS+359+16",
            "UCD+16+3:6",
            "UCS+363+16",
            "UCD+16+3:6",
        ],
        [
            "segment IMD at position 359 element 3 component 6 value '10 und So",
            "segment IMD at position 363 element 3 component 6 value '10'",
        ],
    ),
}

UNREADABLE = {
    "D96ADESADV.json": "a JSON rendering of D96ADESADV.edi, not an interchange",
    "LICENSE": "licence text of the sample collection",
}


def read(samples_dir: Path, name: str) -> EdiOutcome:
    data = samples_dir.joinpath(*FOLDER, name).read_bytes()
    return read_edifact(data, name, source=SOURCE, now=NOW)


def report(outcome: EdiOutcome) -> list[str]:
    """Return the CONTRL service segments, split by pydifact as a receiver would."""
    assert outcome.acknowledgement is not None
    text = outcome.acknowledgement.decode("latin-1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        segments = list(Parser().parse(text))
    tags = [s.tag for s in segments if s.tag != "UNA"]
    assert tags[:2] == ["UNB", "UNH"]
    assert tags[-2:] == ["UNT", "UNZ"]
    assert segments[-2].elements[0] == str(len(tags) - 2)
    body = text.split("'")
    return [s for s in body if s[:2] == "UC"]


@pytest.mark.parametrize("name", ["D96ADESADV.edi", "example_utf8.edi"])
def test_edifact_sample_desadv_gives_exact_event(samples_dir: Path, name: str) -> None:
    outcome = read(samples_dir, name)

    assert outcome.rejections == []
    (event,) = outcome.events
    assert event.id == DESADV_EVENT_ID
    assert event.data == DESADV_EVENT
    assert event.time == "2016-07-26T00:00:00Z"
    assert event.partitionkey == "Y02197250"
    Catalogue.load().validate(event)


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_edifact_sample_exact_contrl(samples_dir: Path, name: str) -> None:
    segments, reasons = REPORTS[name]

    outcome = read(samples_dir, name)

    assert report(outcome) == segments
    assert len(outcome.rejections) == len(reasons)
    for rejection, reason in zip(outcome.rejections, reasons, strict=True):
        assert reason in rejection.message
    if reasons:
        assert outcome.events == []


def test_edifact_contrl_keeps_sender_una(samples_dir: Path) -> None:
    with_una = read(samples_dir, "example_utf8.edi").acknowledgement
    without = read(samples_dir, "D96ADESADV.edi").acknowledgement

    assert with_una is not None
    assert with_una.startswith(b"UNA:+.? '")
    assert without is not None
    assert without.startswith(b"UNB+UNOC:1+8888888:ZZ+")


def test_edifact_samples_every_file_covered(samples_dir: Path) -> None:
    files = {p.name for p in samples_dir.joinpath(*FOLDER[:2]).rglob("*")}
    covered = set(REPORTS) | set(UNREADABLE)

    assert files - covered - {"php-edifact"} == set()
    assert covered - files == set()
