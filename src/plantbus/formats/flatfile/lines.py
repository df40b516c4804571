"""Split a flat file into physical lines that keep their original bytes."""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from plantbus.errors import FormatError, FormatProblem

_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\n|\r)|[^\r\n]+\Z")
_UTF8_BOM = codecs.BOM_UTF8
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


@dataclass(frozen=True, slots=True)
class Line:
    """One physical line: its number (from 1), its bytes with the line end, its text."""

    number: int
    raw: bytes
    text: str


def split_lines(
    data: bytes, source_name: str, encoding: str
) -> tuple[bytes, list[Line]]:
    """Return the byte order mark (or b"") and the file's lines, decoded.

    Bytes that are not valid in `encoding` decode to lone surrogates
    (errors="surrogateescape"), so that one bad byte spoils one value, not the
    file; `has_undecodable` finds them.
    """
    bom = b""
    if data.startswith(_UTF16_BOMS) and not data.startswith(_UTF8_BOM):
        raise FormatError(
            source_name,
            [
                FormatProblem(
                    "byte order mark",
                    "the file starts with a UTF-16 byte order mark, and flat files "
                    "are read only in ASCII-compatible encodings; export it as "
                    "UTF-8 or cp1252",
                    line=1,
                )
            ],
        )
    if data.startswith(_UTF8_BOM):
        if codecs.lookup(encoding).name not in ("utf-8", "utf-8-sig"):
            raise FormatError(
                source_name,
                [
                    FormatProblem(
                        "byte order mark",
                        f"the file starts with a UTF-8 byte order mark, but the "
                        f"layout's encoding is {encoding!r}; set `encoding` to "
                        f"utf-8-sig",
                        line=1,
                    )
                ],
            )
        bom = _UTF8_BOM
        data = data[len(_UTF8_BOM) :]

    # utf-8-sig would drop a second BOM in the middle of the first line only.
    codec = "utf-8" if codecs.lookup(encoding).name == "utf-8-sig" else encoding
    lines = [
        Line(number, match.group(), match.group().decode(codec, "surrogateescape"))
        for number, match in enumerate(_LINE.finditer(data), start=1)
    ]
    return bom, lines


def has_undecodable(text: str) -> bool:
    """Return True when `text` contains a byte that its encoding could not decode."""
    return any("\udc80" <= char <= "\udcff" for char in text)


def escape_undecodable(text: str) -> str:
    """Return `text` with each byte that its encoding could not decode as `\\xNN`."""
    # Lone surrogates cannot be stored as UTF-8, as dead letter details are.
    return "".join(
        f"\\x{ord(char) - 0xDC00:02x}" if "\udc80" <= char <= "\udcff" else char
        for char in text
    )
