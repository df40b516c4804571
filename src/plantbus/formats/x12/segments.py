"""Split an X12 interchange into segments with the delimiters its ISA declares.

The ISA segment has a fixed width of 106 characters. The character at index 3
separates elements, ISA11 is the repetition separator (from version 00402 on;
a letter there, such as 'U', is the older standards identifier), ISA16 is the
component separator, and the character right after ISA16 ends each segment.
Line breaks, spaces and tabs between segments are ignored unless one of them
is a delimiter, so files with CRLF, LF or no line breaks read the same.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from plantbus.errors import EdiError

logger = logging.getLogger("plantbus.formats.x12")

ISA_LENGTH = 106
# How far to look for the 16 element separators of an ISA segment.
_ISA_SCAN = 200
_BLANKS = " \t\r\n"


@dataclass(frozen=True, slots=True)
class Delimiters:
    """The separators and terminator of one interchange."""

    element: str
    component: str
    segment: str
    repetition: str | None
    # Text written after each terminator, copied from the sender (such as CRLF).
    line_break: str = ""
    # Index of the terminator of the ISA segment in the decoded text.
    header_end: int = ISA_LENGTH - 1


@dataclass(slots=True)
class Segment:
    """One segment: tag, elements (index 0 is element 01) and its position."""

    tag: str
    elements: list[str]
    position: int

    def element(self, number: int) -> str:
        """Return element `number` (1-based), or '' when the segment is shorter."""
        if 1 <= number <= len(self.elements):
            return self.elements[number - 1]
        return ""


def decode(data: bytes, source: str) -> str:
    """Decode an interchange: UTF-8 (a byte order mark is dropped) or Latin-1."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # X12 basic and extended character sets are single-byte; Latin-1 maps
        # every byte to one character, so positions stay as the sender wrote them.
        return data.decode("latin-1")


def read_delimiters(text: str, source: str) -> Delimiters:
    """Read the delimiters from the ISA segment at the start of `text`."""
    if not text.startswith("ISA"):
        first = text.split("\n", 1)[0][:40]
        raise EdiError(
            source,
            segment=re.split(r"[^A-Za-z0-9]", first, maxsplit=1)[0],
            position=1,
            element=None,
            value=first,
            rule=(
                "an X12 interchange starts with the ISA segment, which declares "
                "the delimiters; send the interchange with its ISA envelope"
            ),
        )

    if len(text) < 4:
        raise _isa_error(
            source,
            text,
            None,
            "the interchange ends inside the ISA segment; an ISA segment has "
            "16 elements and is 106 characters long",
        )
    element = text[3]
    if element.isalnum() or element in _BLANKS:
        raise _isa_error(
            source,
            text,
            None,
            f"the element separator {element!r} "
            "at position 4 must not be a letter, digit or blank",
        )
    # ISA16 follows the 16th element separator; the segment terminator follows
    # ISA16. Reading them by position in the fixed-width layout would give
    # wrong delimiters when a sender pads one element short, so they are found
    # by counting separators, and `read_interchange` then rejects the widths.
    separators = [i for i, char in enumerate(text[:_ISA_SCAN]) if char == element]
    if len(separators) < 16 or separators[15] + 2 >= len(text):
        raise _isa_error(
            source,
            text,
            None,
            "the ISA segment must have 16 "
            f"elements separated by {element!r} and end with the "
            "component separator and the segment terminator",
        )

    end = separators[15] + 2
    fields = text[:end].split(element)
    mark = fields[11]
    repetition = mark if len(mark) == 1 and not mark.isalnum() else None
    if mark in _BLANKS:
        repetition = None

    component = text[end - 1]
    segment = text[end]
    if len({element, component, segment}) != 3 or segment.isalnum():
        raise _isa_error(
            source,
            text,
            16,
            (
                f"element separator {element!r}, component separator "
                f"{component!r} and segment terminator {segment!r} must be three "
                "different characters that are not letters or digits"
            ),
        )

    rest = text[end + 1 :]
    line_break = rest[: len(rest) - len(rest.lstrip("\r\n"))][:2]
    if segment in "\r\n":
        line_break = ""
    return Delimiters(element, component, segment, repetition, line_break, end)


def _isa_error(source: str, text: str, element: int | None, rule: str) -> EdiError:
    return EdiError(
        source,
        segment="ISA",
        position=1,
        element=element,
        value=text[:ISA_LENGTH],
        rule=rule,
    )


def split_segments(text: str, delimiters: Delimiters) -> list[Segment]:
    """Split the interchange into segments; blank text between segments is dropped."""
    strip = "".join(c for c in _BLANKS if c not in (delimiters.element,))
    # The ISA is cut at its known end, because a blank terminator (seen in the
    # wild) would otherwise split its space-padded elements.
    end = delimiters.header_end
    segments = [Segment("ISA", text[:end].split(delimiters.element)[1:], 1)]
    for piece in text[end + 1 :].split(delimiters.segment):
        piece = piece.lstrip(strip)
        if not piece.strip(strip):
            continue
        if delimiters.segment not in "\r\n":
            # A line break after the last element is layout, not data.
            piece = piece.rstrip("\r\n")
        tag, *elements = piece.split(delimiters.element)
        segments.append(Segment(tag, elements, len(segments) + 1))
    logger.debug("Split an interchange into %d segments.", len(segments))
    return segments
