"""Write the X12 acknowledgement of an interchange: TA1 and 997.

The acknowledgement uses the sender's own delimiters and version, swaps
sender and receiver, and reuses the interchange control number of the
acknowledged interchange. It travels in the other direction, so the pair of
parties and the number identify it.

A rejected interchange gets a TA1 only, because none of its groups could be
read. A readable interchange gets one 997 per functional group, all in one
FA group, with a TA1 in front when ISA14 requested one.
"""

from __future__ import annotations

from datetime import datetime

from plantbus.formats.x12.envelope import FunctionalGroup, Interchange

_TA1_ACCEPTED = "000"


def acknowledge(interchange: Interchange, now: datetime) -> bytes:
    """Return the TA1 and 997 acknowledgement of `interchange`, dated `now`."""
    delimiters = interchange.delimiters
    element, terminator = delimiters.element, delimiters.segment + delimiters.line_break
    isa = interchange.header
    segments: list[list[str]] = []

    segments.append(
        [
            "ISA", "00", " " * 10, "00", " " * 10,
            isa.element(7), isa.element(8), isa.element(5), isa.element(6),
            now.strftime("%y%m%d"), now.strftime("%H%M"), isa.element(11),
            isa.element(12), interchange.control, "0", isa.element(15),
            delimiters.component,
        ]
    )  # fmt: skip
    ta1_code = interchange.ta1_code
    if ta1_code is not None or isa.element(14) == "1":
        segments.append(
            [
                "TA1", interchange.control, isa.element(9), isa.element(10),
                "R" if ta1_code else "A", ta1_code or _TA1_ACCEPTED,
            ]
        )  # fmt: skip
    groups = 0
    if ta1_code is None and interchange.groups:
        groups = 1
        segments.extend(_functional_group(interchange, now))
    segments.append(["IEA", str(groups), interchange.control])
    return "".join(element.join(s) + terminator for s in segments).encode("utf-8")


def _functional_group(interchange: Interchange, now: datetime) -> list[list[str]]:
    first = interchange.groups[0]
    control = first.control
    out = [
        [
            "GS", "FA", first.header.element(3), first.header.element(2),
            now.strftime("%Y%m%d"), now.strftime("%H%M"), control, "X",
            first.version,
        ]
    ]  # fmt: skip
    for number, group in enumerate(interchange.groups, start=1):
        body = _acknowledgement_set(group, interchange)
        set_control = f"{number:04d}"
        out.append(["ST", "997", set_control])
        out.extend(body)
        out.append(["SE", str(len(body) + 2), set_control])
    out.append(["GE", str(len(interchange.groups)), control])
    return out


def _acknowledgement_set(
    group: FunctionalGroup, interchange: Interchange
) -> list[list[str]]:
    component = interchange.delimiters.component
    body = [["AK1", group.functional_id, group.control]]
    accepted = 0
    for tx in group.sets:
        body.append(["AK2", tx.set_id, tx.control])
        for note in tx.notes:
            body.append(_trim(["AK3", note.tag, str(note.position), "", note.code]))
            if note.element is not None:
                position = str(note.element.position)
                if note.element.component is not None:
                    position += component + str(note.element.component)
                copy = _clean(note.element.value, interchange)
                body.append(_trim(["AK4", position, "", note.element.code, copy]))
        if tx.accepted:
            accepted += 1
            body.append(["AK5", "A"])
        else:
            body.append(["AK5", "R", *tx.codes[:5]])

    received = len(group.sets)
    if group.codes or accepted == 0:
        status = "R"
    elif accepted < received:
        status = "P"
    else:
        status = "A"
    declared = group.declared_count or str(received)
    body.append(
        ["AK9", status, declared, str(received), str(accepted), *group.codes[:5]]
    )
    return body


def _clean(value: str, interchange: Interchange) -> str:
    """Return a copy of a bad value for AK404: no delimiters, at most 99 characters."""
    delimiters = interchange.delimiters
    for char in (delimiters.element, delimiters.component, delimiters.segment):
        value = value.replace(char, "")
    if delimiters.repetition:
        value = value.replace(delimiters.repetition, "")
    return value.strip()[:99]


def _trim(elements: list[str]) -> list[str]:
    """Drop empty trailing elements, which X12 does not allow."""
    while elements and not elements[-1]:
        elements.pop()
    return elements
