"""Fuzz the X12 reader: any bytes give an outcome or an EdiError with a message.

Besides the error type, each input checks that every rejection has a message.
"""

from __future__ import annotations

from datetime import UTC, datetime

import atheris

with atheris.instrument_imports(include=["plantbus"]):
    from plantbus.errors import EdiError
    from plantbus.formats.x12 import read_x12

from _harness import check, main

NOW = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def parse(data: bytes) -> None:
    outcome = read_x12(data, "fuzz.x12", source="supplier-edi", plant="P1", now=NOW)
    for rejection in outcome.rejections:
        assert rejection.describe().strip(), "a rejection has no message"


def test_one_input(data: bytes) -> None:
    check(parse, data, EdiError)


if __name__ == "__main__":
    main(test_one_input)
