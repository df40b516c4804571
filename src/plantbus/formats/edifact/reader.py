"""Read an EDIFACT interchange with pydifact and check its envelopes.

pydifact splits the text into segments, honouring the UNA service string
advice and the release character. This module decodes the bytes by the
character set that UNB names, checks UNB/UNZ and UNH/UNT (references and
counts), and checks that no segment or composite has more constituents than
the segment directory allows. Problems are stored in the form a CONTRL message
reports them: syntax error code (data element 0085), segment position
counted from UNH as 1, data element and component position.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass, field

from pydifact.control.characters import Characters
from pydifact.exceptions import EDISyntaxError, ValidationError
from pydifact.parser import Parser

from plantbus.errors import EdiError
from plantbus.formats.shipnotice import has_control_character, is_ascii_digits

logger = logging.getLogger("plantbus.formats.edifact")

# Syntax error codes (0085) that this reader reports.
SYNTAX_NOT_SUPPORTED = "2"
INVALID_VALUE = "12"
MISSING = "13"
VALUE_NOT_SUPPORTED = "14"
TOO_MANY_CONSTITUENTS = "16"
INVALID_DECIMAL = "19"
INVALID_CHARACTERS = "21"
REFERENCES_DO_NOT_MATCH = "28"
COUNT_DOES_NOT_MATCH = "29"
MISSING_DIGIT_BEFORE_DECIMAL = "38"

# Python codecs of the UNB syntax identifiers (0001).
CHARSETS = {
    "UNOA": "ascii", "UNOB": "ascii", "UNOC": "latin-1", "UNOD": "iso8859_2",
    "UNOE": "iso8859_5", "UNOF": "iso8859_7", "UNOG": "iso8859_3",
    "UNOH": "iso8859_4", "UNOI": "iso8859_6", "UNOJ": "iso8859_8",
    "UNOK": "iso8859_9", "UNOW": "utf-8", "UNOY": "utf-8",
}  # fmt: skip

# Maximum data elements of a segment, and maximum components of each element,
# from the UN/EDIFACT directories D.96A to D.01B for the segments a DESADV uses.
CONSTITUENTS: dict[str, tuple[int, ...]] = {
    "UNB": (4, 4, 4, 2, 1, 2, 1, 1, 1, 1, 1),
    "UNH": (1, 8, 1, 4, 3, 3, 3),
    "UNT": (1, 1), "UNZ": (1, 1), "UNS": (1,),
    "BGM": (4, 3, 1, 1), "DTM": (3,), "RFF": (5,), "CNT": (3,),
    "NAD": (1, 4, 5, 6, 4, 1, 2, 1, 1),
    "CPS": (1, 1, 1), "PAC": (1, 3, 5, 5, 2),
    "LIN": (1, 1, 4, 2, 1, 1), "PIA": (1, 4, 4, 4, 4, 4),
    "IMD": (1, 3, 5, 1), "QTY": (3,), "GIN": (1, 2, 2, 2, 2, 2),
    "MEA": (1, 4, 6, 1), "PCI": (1, 10, 1, 3),
}  # fmt: skip


@dataclass(slots=True)
class Note:
    """One syntax problem, as CONTRL reports it in UCS/UCD or UCI/UCM."""

    tag: str
    position: int
    code: str
    rule: str
    element: int | None = None
    component: int | None = None
    value: str = ""

    def describe(self) -> str:
        """Return the problem as one sentence."""
        where = f"segment {self.tag} at position {self.position}"
        if self.element is not None:
            where += f" element {self.element}"
            if self.component is not None:
                where += f" component {self.component}"
            where += f" value {self.value!r}"
        return f"{where}: {self.rule} (syntax error code {self.code})"


@dataclass(slots=True)
class Segment:
    """A segment: tag, elements (a component list for composites), position."""

    tag: str
    elements: list[str | list[str]]
    position: int

    def component(self, element: int, component: int = 1) -> str:
        """Return one component (1-based), or '' when it is not there."""
        if element > len(self.elements):
            return ""
        value = self.elements[element - 1]
        if isinstance(value, str):
            return value if component == 1 else ""
        return value[component - 1] if component <= len(value) else ""


@dataclass(slots=True)
class Message:
    """One UNH..UNT message with its segment positions counted from UNH."""

    reference: str
    header: Segment
    segments: list[Segment]
    notes: list[Note] = field(default_factory=list)

    @property
    def message_type(self) -> str:
        return self.header.component(2, 1)

    @property
    def accepted(self) -> bool:
        return not self.notes


@dataclass(slots=True)
class EdifactInterchange:
    """One UNB..UNZ interchange, its messages and interchange-level problems."""

    characters: Characters
    service_string_advice: bool
    header: Segment
    charset: str
    messages: list[Message] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)

    @property
    def reference(self) -> str:
        return self.header.component(5)

    @property
    def sender(self) -> str:
        return self.header.component(2)

    @property
    def recipient(self) -> str:
        return self.header.component(3)


def read_interchange(data: bytes, source: str) -> EdifactInterchange:
    """Parse and check an interchange; raise EdiError when it has no UNB."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    data = data.lstrip(b" \r\n\t")
    separator = data[4:5] if data.startswith(b"UNA") else b"+"
    found = re.search(rb"UNB" + re.escape(separator) + rb"([A-Z]{4})", data[:200])
    if found is None:
        raise EdiError(
            source, segment=data[:3].decode("ascii", "replace"), position=1,
            element=None, value=data[:40].decode("ascii", "replace"),
            rule="an EDIFACT interchange starts with UNA or UNB, and UNB names "
            "the syntax identifier such as 'UNOC'",
        )  # fmt: skip
    syntax = found.group(1).decode("ascii")
    text = _decode(data, syntax)

    segments = _parse(text, source)
    una = segments and segments[0].tag == "UNA"
    characters = Characters.from_str("UNA" + text[3:9]) if una else _default()
    segments = [s for s in segments if s.tag != "UNA"]
    if not segments:
        raise EdiError(
            source, segment="UNA", position=1, element=None, value=text[:40],
            rule="the interchange has a UNA segment but no UNB after it",
        )  # fmt: skip
    interchange = EdifactInterchange(characters, bool(una), segments[0], syntax)
    if segments[0].tag != "UNB":
        raise EdiError(
            source, segment=segments[0].tag, position=1, element=None,
            value=segments[0].tag, rule="the first segment after UNA must be UNB",
        )  # fmt: skip
    if syntax not in CHARSETS:
        interchange.notes.append(
            Note("UNB", 1, SYNTAX_NOT_SUPPORTED,
                 f"syntax identifier {syntax!r} is not supported; use UNOA to "
                 "UNOK, UNOW or UNOY", 1, 1, syntax)
        )  # fmt: skip
        return interchange
    if "\ufffd" in text and syntax in ("UNOA", "UNOB"):
        interchange.notes.append(
            Note("UNB", 1, INVALID_CHARACTERS,
                 f"the interchange has bytes outside the {syntax} character set",
                 1, 1, syntax)
        )  # fmt: skip
    for number in (2, 3, 5):
        for part, value in enumerate(_parts(interchange.header, number), start=1):
            if has_control_character(value):
                interchange.notes.append(
                    Note("UNB", 1, INVALID_CHARACTERS,
                         "UNB must not contain control characters",
                         number, part, value)
                )  # fmt: skip
                return interchange
    _split_messages(interchange, segments)
    return interchange


def _parts(segment: Segment, number: int) -> list[str]:
    if number > len(segment.elements):
        return []
    value = segment.elements[number - 1]
    return [value] if isinstance(value, str) else list(value)


def _decode(data: bytes, syntax: str) -> str:
    """Decode by the syntax identifier; single-byte sets accept UTF-8 as well."""
    codec = CHARSETS.get(syntax, "latin-1")
    if codec not in ("ascii", "utf-8"):
        # Senders often declare UNOC but send UTF-8. Bytes that are valid UTF-8
        # with non-ASCII characters are almost never meaningful ISO 8859 text,
        # so they are read as UTF-8.
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return data.decode(codec, errors="replace")


def _default() -> Characters:
    """Return the service characters that apply without UNA: ':', '+', '?' and "'"."""
    return Characters()  # type: ignore[no-untyped-call]


def _parse(text: str, source: str) -> list[Segment]:
    try:
        with warnings.catch_warnings():
            # pydifact warns for every segment of a directory it lacks.
            warnings.simplefilter("ignore")
            parsed = list(Parser().parse(text))
    except (EDISyntaxError, ValidationError, IndexError, ValueError) as exc:
        raise EdiError(
            source, segment="", position=0, element=None, value=text[-40:],
            rule=f"the interchange cannot be split into segments: {exc}",
        ) from exc  # fmt: skip
    if not parsed:
        raise EdiError(
            source, segment="", position=0, element=None, value=text[:40],
            rule="the interchange has no segments",
        )  # fmt: skip
    return [Segment(s.tag, list(s.elements), index) for index, s in enumerate(parsed)]


def _split_messages(interchange: EdifactInterchange, segments: list[Segment]) -> None:
    current: list[Segment] | None = None
    trailer: Segment | None = None
    for segment in segments[1:]:
        if segment.tag == "UNZ":
            trailer = segment
            break
        if segment.tag in ("UNG", "UNE"):
            continue
        if segment.tag == "UNH":
            current = [segment]
            continue
        if current is None:
            interchange.notes.append(
                Note(segment.tag, segment.position, INVALID_VALUE,
                     "a segment outside UNH..UNT is found where UNH or UNZ is expected")
            )  # fmt: skip
            return
        current.append(segment)
        if segment.tag == "UNT":
            interchange.messages.append(_message(current))
            current = None
    if current is not None:
        interchange.messages.append(_message(current))
    if trailer is not None and trailer.position < segments[-1].position:
        # A file contains one interchange, so a second one after UNZ would
        # otherwise be dropped without a message to the sender.
        after = segments[trailer.position + 1]
        interchange.notes.append(
            Note(after.tag, after.position, INVALID_VALUE,
                 "a segment follows the UNZ trailer; send one interchange per file")
        )  # fmt: skip
        return
    _check_trailer(interchange, trailer)


def _message(segments: list[Segment]) -> Message:
    header = segments[0]
    body = [Segment(s.tag, s.elements, i) for i, s in enumerate(segments, start=1)]
    message = Message(header.component(1), body[0], body)
    for segment in body:
        message.notes.extend(_constituent_notes(segment))
        message.notes.extend(_character_notes(segment))
    trailer = body[-1]
    if trailer.tag != "UNT":
        message.notes.append(
            Note("UNT", len(body) + 1, MISSING, "the message has no UNT trailer")
        )
        return message
    if trailer.component(2) != message.reference:
        message.notes.append(
            Note("UNT", trailer.position, REFERENCES_DO_NOT_MATCH,
                 f"UNT names message {trailer.component(2)!r} but UNH names "
                 f"{message.reference!r}", 2, 1, trailer.component(2))
        )  # fmt: skip
    count = trailer.component(1)
    if not is_ascii_digits(count) or int(count) != len(body):
        message.notes.append(
            Note("UNT", trailer.position, COUNT_DOES_NOT_MATCH,
                 f"UNT counts {count!r} segments but the message has "
                 f"{len(body)} from UNH to UNT", 1, 1, count)
        )  # fmt: skip
    return message


def _constituent_notes(segment: Segment) -> list[Note]:
    limits = CONSTITUENTS.get(segment.tag)
    if limits is None:
        return []
    if len(segment.elements) > len(limits):
        number = len(limits) + 1
        return [
            Note(segment.tag, segment.position, TOO_MANY_CONSTITUENTS,
                 f"{segment.tag} has at most {len(limits)} data elements",
                 number, None, str(segment.component(number)))
        ]  # fmt: skip
    for number, (value, limit) in enumerate(
        zip(segment.elements, limits, strict=False), start=1
    ):
        if isinstance(value, list) and len(value) > limit:
            return [
                Note(segment.tag, segment.position, TOO_MANY_CONSTITUENTS,
                     f"data element {number} of {segment.tag} has at most "
                     f"{limit} components; a ':' inside a value must be "
                     "preceded by the release character", number, limit + 1,
                     value[limit])
            ]  # fmt: skip
    return []


def _character_notes(segment: Segment) -> list[Note]:
    for number in range(1, len(segment.elements) + 1):
        for part, value in enumerate(_parts(segment, number), start=1):
            if has_control_character(value):
                return [
                    Note(segment.tag, segment.position, INVALID_CHARACTERS,
                         "data elements must not contain control characters",
                         number, part, value)
                ]  # fmt: skip
    return []


def _check_trailer(interchange: EdifactInterchange, trailer: Segment | None) -> None:
    if trailer is None:
        interchange.notes.append(
            Note("UNZ", 0, MISSING, "the interchange has no UNZ trailer")
        )
        return
    if trailer.component(2) != interchange.reference:
        interchange.notes.append(
            Note("UNZ", trailer.position, REFERENCES_DO_NOT_MATCH,
                 f"UNZ names interchange {trailer.component(2)!r} but UNB names "
                 f"{interchange.reference!r}", 2, 1, trailer.component(2))
        )  # fmt: skip
        return
    count = trailer.component(1)
    if not is_ascii_digits(count) or int(count) != len(interchange.messages):
        interchange.notes.append(
            Note("UNZ", trailer.position, COUNT_DOES_NOT_MATCH,
                 f"UNZ counts {count!r} messages but the interchange has "
                 f"{len(interchange.messages)}", 1, 1, count)
        )  # fmt: skip
