"""Hostile B2MML documents: events or a FormatError with a message, nothing else."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from plantbus.errors import FormatError
from plantbus.formats.b2mml import parse_b2mml
from tests.hostile.properties import (
    EXAMPLES,
    PROPERTY_SETTINGS,
    TRICKY_BYTES,
    Samples,
    mutated,
    parse_or_error,
    read_samples,
)

TRICKY_TEXT = [
    "",
    "-5",
    "1e400",
    "NaN",
    "12,5",
    "9" * 60,
    "2019-02-30T10:00:00Z",
    "2019-04-24T25:00:00Z",
    "2019-04-24T10:00:00",
    "2019-04-24T10:00:00+24:00",
    "10000-01-01T00:00:00Z",
    "\u00e4\u20ac",
    "x" * 300,
]


# Each example validates against an XSD, so B2MML runs half the examples.
B2MML_SETTINGS = settings(PROPERTY_SETTINGS, max_examples=max(1, EXAMPLES // 2))
# lxml accepts no control characters in element text.
XML_CHARACTERS = st.characters(blacklist_categories=("Cc", "Cs"))


@pytest.fixture(scope="module")
def b2mml_samples(samples_dir: Path) -> Samples:
    return read_samples(samples_dir / "b2mml" / "examples", "*.xml", max_bytes=40_000)


def _parser(b2mml_xsd: Path) -> Callable[[bytes], object]:
    def parse(data: bytes) -> object:
        return parse_b2mml(data, "hostile.xml", b2mml_xsd, "PLANT-1")

    return parse


@B2MML_SETTINGS
@given(data=st.binary(max_size=512))
def test_b2mml_reader_any_bytes(data: bytes, b2mml_xsd: Path) -> None:
    parse_or_error(_parser(b2mml_xsd), data, FormatError)


@B2MML_SETTINGS
@given(data=st.data())
def test_b2mml_reader_mutated_samples(
    data: st.DataObject, b2mml_samples: list[bytes], b2mml_xsd: Path
) -> None:
    document = data.draw(mutated(b2mml_samples))

    parse_or_error(_parser(b2mml_xsd), document, FormatError)


@B2MML_SETTINGS
@given(data=st.data())
def test_b2mml_reader_tricky_element_text(
    data: st.DataObject, b2mml_samples: list[bytes], b2mml_xsd: Path
) -> None:
    sample = data.draw(st.sampled_from(b2mml_samples))
    root = etree.fromstring(sample, etree.XMLParser(resolve_entities=False))
    elements = [e for e in root.iter() if isinstance(e.tag, str) and len(e) == 0]
    for _ in range(data.draw(st.integers(1, 3))):
        element = data.draw(st.sampled_from(elements))
        element.text = data.draw(
            st.one_of(
                st.sampled_from([*TRICKY_TEXT, *OVERFLOWING_TIMES]),
                st.text(XML_CHARACTERS, max_size=12),
            )
        )
    document = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    if data.draw(st.booleans()):
        document += data.draw(st.sampled_from(TRICKY_BYTES))

    parse_or_error(_parser(b2mml_xsd), document, FormatError)


# Inputs that once made the reader raise OverflowError instead of FormatError.
OVERFLOWING_TIMES = [
    # xmlschema 4.3.2 raises OverflowError while it validates this xs:dateTime.
    "99999999999-04-24T15:30:01Z",
    # Valid xs:dateTime values whose conversion to UTC leaves datetime's range.
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
]


@pytest.mark.parametrize("text", OVERFLOWING_TIMES)
def test_b2mml_reader_rejects_time_out_of_range(
    text: str, samples_dir: Path, b2mml_xsd: Path
) -> None:
    sample = samples_dir / "b2mml/examples/cocop_v0600/ProcessProductionSchedule.xml"
    root = etree.fromstring(sample.read_bytes())
    next(root.iter("{*}CreationDateTime")).text = text
    document = etree.tostring(root, xml_declaration=True, encoding="UTF-8")

    with pytest.raises(FormatError):
        parse_b2mml(document, "time.xml", b2mml_xsd, "PLANT-1")
