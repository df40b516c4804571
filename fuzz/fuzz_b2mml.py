"""Fuzz the B2MML reader: any bytes give events or a FormatError with a message."""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["plantbus"]):
    from plantbus.errors import FormatError
    from plantbus.formats.b2mml import parse_b2mml

from _harness import check, main, samples_dir

SCHEMA_DIR = samples_dir() / "b2mml" / "xsd"


def parse(data: bytes) -> None:
    parse_b2mml(data, "fuzz.xml", SCHEMA_DIR, "PLANT-1")


def test_one_input(data: bytes) -> None:
    check(parse, data, FormatError)


if __name__ == "__main__":
    main(test_one_input)
