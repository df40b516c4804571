"""Hostile EDIFACT interchanges: an outcome or an EdiError with a message, no other."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plantbus.errors import EdiError
from plantbus.formats.edifact import read_edifact
from plantbus.formats.shipnotice import EdiOutcome
from tests.hostile.properties import (
    PROPERTY_SETTINGS,
    Samples,
    check_edi_outcome,
    mutated,
    read_samples,
)

NOW = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def edifact_samples(samples_dir: Path) -> Samples:
    return read_samples(samples_dir / "edi" / "edifact", "*.edi")


def _read(data: bytes) -> EdiOutcome:
    return read_edifact(data, "hostile.edi", source="supplier-edi", plant="P1", now=NOW)


@PROPERTY_SETTINGS
@given(data=st.binary(max_size=512))
def test_edifact_reader_any_bytes(data: bytes) -> None:
    check_edi_outcome(_read, data)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_edifact_reader_mutated_samples(
    data: st.DataObject, edifact_samples: Samples
) -> None:
    check_edi_outcome(_read, data.draw(mutated(edifact_samples)))


# Inputs that the property tests found: the reader once let IndexError and
# pydifact's ValueError for a bad segment tag escape instead of raising EdiError.
FOUND_INPUTS = [
    pytest.param(
        b"UNA:+.? '\nUNB+UNOC:",
        id="una-then-cut-unb-indexerror",
    ),
    pytest.param(
        b"UNA:+.? '\nUNB+UNOC:1+1556150:31B+8888888:ZZ+160727:0953+1'\n"
        b"UNH+142+DESADV:0:96A:UN'\nNA1DU+S+694901+31B'\nUNT+2+142'\nUNZ+1+1'\n",
        id="bad-segment-tag-valueerror",
    ),
]


@pytest.mark.parametrize("data", FOUND_INPUTS)
def test_edifact_reader_rejects_found_inputs(data: bytes) -> None:
    with pytest.raises(EdiError):
        _read(data)


def test_edifact_reader_rejects_superscript_count(samples_dir: Path) -> None:
    sample = samples_dir / "edi/edifact/php-edifact/D96ADESADV.edi"
    data = sample.read_bytes().replace(b"UNT+21+142'", b"UNT+\xb21+142'")

    outcome = _read(data)

    assert outcome.rejections
