"""Fuzz the B2MML reader past the XSD: change the text of elements in real samples.

Raw bytes (fuzz_b2mml.py) mostly fail at the XML or XSD gate. This harness
takes a sample document, lets the fuzzer choose elements and their new text,
and so reaches the time, quantity and mapping rules behind the XSD.
"""

from __future__ import annotations

import atheris
from lxml import etree

with atheris.instrument_imports(include=["plantbus"]):
    from plantbus.errors import FormatError
    from plantbus.formats.b2mml import parse_b2mml

from _harness import check, main, samples_dir

SCHEMA_DIR = samples_dir() / "b2mml" / "xsd"
SAMPLES = sorted(
    path.read_bytes()
    for path in (samples_dir() / "b2mml" / "examples").rglob("*.xml")
    if path.stat().st_size <= 40_000
)


def _xml_char(char: str) -> bool:
    """Return True for a character that XML 1.0 allows in text (production Char)."""
    code = ord(char)
    return (
        char in "\t\n\r"
        or 0x20 <= code <= 0xD7FF
        or 0xE000 <= code <= 0xFFFD
        or code >= 0x10000
    )


def _document(data: bytes) -> bytes:
    provider = atheris.FuzzedDataProvider(data)
    root = etree.fromstring(SAMPLES[provider.ConsumeIntInRange(0, len(SAMPLES) - 1)])
    leaves = [e for e in root.iter() if isinstance(e.tag, str) and len(e) == 0]
    for _ in range(provider.ConsumeIntInRange(1, 4)):
        element = leaves[provider.ConsumeIntInRange(0, len(leaves) - 1)]
        text = provider.ConsumeUnicodeNoSurrogates(40)
        element.text = "".join(c for c in text if _xml_char(c))
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def parse(data: bytes) -> None:
    parse_b2mml(_document(data), "fuzz.xml", SCHEMA_DIR, "PLANT-1")


def test_one_input(data: bytes) -> None:
    check(parse, data, FormatError)


if __name__ == "__main__":
    main(test_one_input)
