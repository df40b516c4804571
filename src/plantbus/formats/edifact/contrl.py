"""Write the CONTRL syntax and service report for an EDIFACT interchange.

The report uses the sender's service characters (and a UNA when the sender
sent one), swaps sender and recipient, and reuses the interchange reference
of the acknowledged interchange, because the report travels in the other
direction. UCI reports the interchange and UCM each message. Each problem
in a message gets a UCS with the segment position (UNH is 1) and a UCD with
the data element and component position.
"""

from __future__ import annotations

from datetime import datetime

from pydifact.control.characters import Characters

from plantbus.formats.edifact.reader import EdifactInterchange, Note, Segment

# Action codes (0083).
REJECTED = "4"
ACKNOWLEDGED = "7"


def write_contrl(interchange: EdifactInterchange, now: datetime) -> bytes:
    """Return the CONTRL interchange that acknowledges `interchange`, dated `now`."""
    chars = interchange.characters
    header = interchange.header
    reference = interchange.reference
    body: list[list[object]] = [["UNH", "1", ["CONTRL", "D", "3", "UN"]]]

    rejected = bool(interchange.notes)
    uci: list[object] = [
        "UCI", reference, _raw(header, 2), _raw(header, 3),
        REJECTED if rejected else ACKNOWLEDGED,
    ]  # fmt: skip
    if rejected:
        uci.extend(_error_elements(interchange.notes[0]))
    body.append(uci)
    if not rejected:
        for message in interchange.messages:
            ucm: list[object] = [
                "UCM", message.reference, _raw(message.header, 2),
                ACKNOWLEDGED if message.accepted else REJECTED,
            ]  # fmt: skip
            body.append(ucm)
            for note in message.notes:
                body.append(["UCS", str(note.position), note.code])
                if note.element is not None:
                    position = [str(note.element)]
                    if note.component is not None:
                        position.append(str(note.component))
                    body.append(["UCD", note.code, position])
    body.append(["UNT", str(len(body) + 1), "1"])

    syntax = [interchange.charset, header.component(1, 2) or "3"]
    segments: list[list[object]] = [
        [
            "UNB", syntax, _raw(header, 3), _raw(header, 2),
            [now.strftime("%y%m%d"), now.strftime("%H%M")], reference,
        ],
        *body,
        ["UNZ", "1", reference],
    ]  # fmt: skip
    text = "".join(_serialise(segment, chars) for segment in segments)
    if interchange.service_string_advice:
        text = chars.service_string_advice + text
    return text.encode(_codec(interchange.charset), errors="replace")


def _error_elements(note: Note) -> list[object]:
    position: list[str] = [str(note.element or "")]
    if note.component is not None:
        position.append(str(note.component))
    return [note.code, note.tag, position] if note.element else [note.code, note.tag]


def _raw(segment: Segment, number: int) -> object:
    return segment.elements[number - 1] if number <= len(segment.elements) else ""


def _serialise(segment: list[object], chars: Characters) -> str:
    tag, *elements = segment
    parts = [str(tag)]
    for element in elements:
        if isinstance(element, list):
            parts.append(
                chars.component_separator.join(_escape(str(c), chars) for c in element)
            )
        else:
            parts.append(_escape(str(element), chars))
    while len(parts) > 1 and not parts[-1]:
        parts.pop()
    return chars.data_separator.join(parts) + chars.segment_terminator


def _escape(value: str, chars: Characters) -> str:
    release = chars.escape_character
    for special in (
        release, chars.component_separator, chars.data_separator,
        chars.segment_terminator,
    ):  # fmt: skip
        value = value.replace(special, release + special)
    return value


def _codec(charset: str) -> str:
    from plantbus.formats.edifact.reader import CHARSETS

    return CHARSETS.get(charset, "latin-1")
