"""Hostile X12 interchanges: an outcome or an EdiError with a message, nothing else."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plantbus.errors import EdiError
from plantbus.formats.shipnotice import EdiOutcome
from plantbus.formats.x12 import read_x12
from tests.hostile.properties import (
    PROPERTY_SETTINGS,
    Samples,
    check_edi_outcome,
    mutated,
    read_samples,
)

NOW = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def x12_samples(samples_dir: Path) -> Samples:
    return read_samples(samples_dir / "edi" / "x12", "*.txt")


def _read(data: bytes) -> EdiOutcome:
    return read_x12(data, "hostile.x12", source="supplier-edi", plant="P1", now=NOW)


@PROPERTY_SETTINGS
@given(data=st.binary(max_size=512))
def test_x12_reader_any_bytes(data: bytes) -> None:
    check_edi_outcome(_read, data)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_x12_reader_mutated_samples(data: st.DataObject, x12_samples: Samples) -> None:
    check_edi_outcome(_read, data.draw(mutated(x12_samples)))


@pytest.mark.parametrize("data", [b"ISA", b"ISA*", b"ISA*00*"])
def test_x12_reader_rejects_cut_isa(data: bytes) -> None:
    """A cut ISA segment once raised IndexError instead of EdiError."""
    with pytest.raises(EdiError) as caught:
        _read(data)

    assert caught.value.segment == "ISA"


def test_x12_reader_rejects_superscript_count(samples_dir: Path) -> None:
    sample = samples_dir / "edi/x12/walmartlabs_gozer/asn856.txt"
    data = sample.read_bytes().replace(b"GE*1*49", b"GE*\xb21*49")

    outcome = _read(data)

    assert outcome.rejections
