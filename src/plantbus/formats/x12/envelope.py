"""Check the X12 envelopes ISA/IEA, GS/GE and ST/SE of one interchange.

The result keeps every problem in the form an acknowledgement reports it.
An interchange error is a TA1 note code (data element I18), and a group error
an AK905 code (data element 716). A transaction set error is an AK502 code
(data element 718), and an error inside a set an AK3/AK4 note with segment
and element positions counted from ST as segment 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from plantbus.formats.shipnotice import has_control_character, is_ascii_digits
from plantbus.formats.x12.segments import Delimiters, Segment

# TA1 interchange note codes (I18) that this reader reports.
TA1_CONTROL_NUMBER_MISMATCH = "001"
TA1_INVALID_DATE = "014"
TA1_INVALID_TIME = "015"
TA1_INVALID_CONTROL_NUMBER = "018"
TA1_INVALID_ACK_REQUESTED = "019"
TA1_INVALID_TEST_INDICATOR = "020"
TA1_GROUP_COUNT_MISMATCH = "021"
TA1_INVALID_CONTROL_STRUCTURE = "022"
TA1_PREMATURE_END = "023"
TA1_INVALID_CONTENT = "024"

# AK905 functional group syntax error codes (716).
AK9_TRAILER_MISSING = "3"
AK9_CONTROL_NUMBER_MISMATCH = "4"
AK9_SET_COUNT_MISMATCH = "5"

# AK502 transaction set syntax error codes (718).
AK5_NOT_SUPPORTED = "1"
AK5_TRAILER_MISSING = "2"
AK5_CONTROL_NUMBER_MISMATCH = "3"
AK5_SEGMENT_COUNT_MISMATCH = "4"
AK5_SEGMENTS_IN_ERROR = "5"
AK5_INVALID_SET_ID = "6"
AK5_INVALID_CONTROL_NUMBER = "7"
AK5_DUPLICATE_CONTROL_NUMBER = "23"


@dataclass(slots=True)
class ElementNote:
    """An AK4 note: element position, optional component, error code, bad value."""

    position: int
    code: str
    value: str
    component: int | None = None


@dataclass(slots=True)
class SegmentNote:
    """An AK3 note: segment tag and position in the set, code, and why."""

    tag: str
    position: int
    code: str
    rule: str
    element: ElementNote | None = None

    def describe(self) -> str:
        """Return the note as one sentence for logs and dead letters."""
        where = f"segment {self.tag} at position {self.position}"
        if self.element is not None:
            where += f" element {self.element.position:02d}"
            if self.element.component is not None:
                where += f" component {self.element.component}"
            where += f" value {self.element.value!r}"
        return f"{where}: {self.rule}"


@dataclass(slots=True)
class TransactionSet:
    """One ST/SE transaction set, its segments and what was found wrong."""

    set_id: str
    control: str
    segments: list[Segment]
    codes: list[str] = field(default_factory=list)
    notes: list[SegmentNote] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        """Return True when the set has no error."""
        return not self.codes


@dataclass(slots=True)
class FunctionalGroup:
    """One GS/GE group with its transaction sets."""

    header: Segment
    sets: list[TransactionSet] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    declared_count: str = ""

    @property
    def functional_id(self) -> str:
        return self.header.element(1)

    @property
    def control(self) -> str:
        return self.header.element(6)

    @property
    def sender(self) -> str:
        return self.header.element(2)

    @property
    def version(self) -> str:
        return self.header.element(8)


@dataclass(slots=True)
class Interchange:
    """One ISA/IEA interchange: delimiters, header, groups and interchange errors."""

    delimiters: Delimiters
    header: Segment
    groups: list[FunctionalGroup] = field(default_factory=list)
    ta1_code: str | None = None
    reason: str | None = None

    @property
    def control(self) -> str:
        return self.header.element(13)

    @property
    def sender(self) -> str:
        return f"{self.header.element(5)}:{self.header.element(6).strip()}"

    @property
    def receiver(self) -> str:
        return f"{self.header.element(7)}:{self.header.element(8).strip()}"

    def reject(self, code: str, reason: str) -> None:
        """Mark the whole interchange as rejected, keeping the first reason."""
        if self.ta1_code is None:
            self.ta1_code = code
            self.reason = reason


# ISA element number, pattern of its fixed-width value, TA1 code, expectation.
_ISA_RULES: list[tuple[int, str, str, str]] = [
    (1, r"[0-9]{2}", "010", "an authorization qualifier of 2 digits"),
    (2, r".{10}", "011", "authorization information of 10 characters"),
    (3, r"[0-9]{2}", "012", "a security qualifier of 2 digits"),
    (4, r".{10}", "013", "security information of 10 characters"),
    (5, r"[A-Z0-9]{2}", "005", "a sender id qualifier of 2 characters"),
    (6, r".{15}", "006", "a sender id of 15 characters, padded with spaces"),
    (7, r"[A-Z0-9]{2}", "007", "a receiver id qualifier of 2 characters"),
    (8, r".{15}", "008", "a receiver id of 15 characters, padded with spaces"),
    (9, r"[0-9]{6}", TA1_INVALID_DATE, "a date YYMMDD"),
    (10, r"[0-9]{4}", TA1_INVALID_TIME, "a time HHMM"),
    (11, r"[^A-Za-z0-9 ]|U", "016", "'U' or a repetition separator"),
    (12, r"[0-9]{5}", "017", "a version number of 5 digits"),
    (13, r"[0-9]{9}", TA1_INVALID_CONTROL_NUMBER, "a control number of 9 digits"),
    (14, r"[01]", TA1_INVALID_ACK_REQUESTED, "'0' or '1'"),
    (15, r"[PTI]", TA1_INVALID_TEST_INDICATOR, "'P', 'T' or 'I'"),
    (16, r".", "027", "a component separator of one character"),
]
_GS_RULES: list[tuple[int, str, str]] = [
    (1, r"[A-Z0-9]{2}", "a functional identifier code of 2 characters"),
    (2, r".{2,15}", "an application sender code of 2 to 15 characters"),
    (3, r".{2,15}", "an application receiver code of 2 to 15 characters"),
    (4, r"([0-9]{2})?[0-9]{6}", "a date CCYYMMDD"),
    (5, r"[0-9]{4}([0-9]{2}([0-9]{1,2})?)?", "a time HHMM[SS[dd]]"),
    (6, r"[0-9]{1,9}", "a group control number of 1 to 9 digits"),
    (7, r"[TX]", "a responsible agency code 'X' or 'T'"),
    (8, r".{1,12}", "a version code of 1 to 12 characters"),
]


def read_interchange(segments: list[Segment], delimiters: Delimiters) -> Interchange:
    """Check the envelopes of `segments`, which start with the ISA segment."""
    interchange = Interchange(delimiters, segments[0])
    _check_isa(interchange)
    index = 1
    while index < len(segments) and interchange.ta1_code is None:
        segment = segments[index]
        if segment.tag == "IEA":
            _check_iea(interchange, segment)
            if index + 1 < len(segments):
                extra = segments[index + 1]
                interchange.reject(
                    TA1_INVALID_CONTROL_STRUCTURE,
                    f"segment {extra.tag} at position {extra.position} follows the "
                    "IEA trailer; send one interchange per file",
                )
            return interchange
        if segment.tag != "GS":
            interchange.reject(
                TA1_INVALID_CONTENT,
                f"segment {segment.tag!r} at position {segment.position} is found "
                "where a GS group header or the IEA trailer is expected",
            )
            break
        index = _read_group(interchange, segments, index)
    if interchange.ta1_code is None:
        interchange.reject(
            TA1_PREMATURE_END,
            "the interchange ends without its IEA trailer; send the whole file",
        )
    return interchange


def _check_isa(interchange: Interchange) -> None:
    isa = interchange.header
    for number, pattern, code, expected in _ISA_RULES:
        value = isa.element(number)
        # ISA11 and ISA16 are delimiters, which may be control characters.
        text = value if number not in (11, 16) else ""
        if not re.fullmatch(pattern, value) or has_control_character(text):
            interchange.reject(
                code, f"ISA{number:02d} is {value!r}: expected {expected}"
            )
            return


def _check_iea(interchange: Interchange, iea: Segment) -> None:
    count, control = iea.element(1), iea.element(2)
    if control != interchange.control:
        interchange.reject(
            TA1_CONTROL_NUMBER_MISMATCH,
            f"IEA02 is {control!r} but ISA13 is {interchange.control!r}: the "
            "interchange control numbers in header and trailer must be equal",
        )
    elif count != str(len(interchange.groups)) and not (
        is_ascii_digits(count) and int(count) == len(interchange.groups)
    ):
        interchange.reject(
            TA1_GROUP_COUNT_MISMATCH,
            f"IEA01 is {count!r} but the interchange has "
            f"{len(interchange.groups)} functional groups",
        )


def _read_group(interchange: Interchange, segments: list[Segment], start: int) -> int:
    """Read one group from the GS at `start`; return the index after its GE."""
    header = segments[start]
    for number, pattern, expected in _GS_RULES:
        value = header.element(number)
        if not re.fullmatch(pattern, value) or has_control_character(value):
            interchange.reject(
                TA1_INVALID_CONTENT,
                f"GS{number:02d} at position {header.position} is {value!r}: "
                f"expected {expected}",
            )
            return len(segments)
    if len(header.elements) > 8:
        interchange.reject(
            TA1_INVALID_CONTENT,
            f"GS at position {header.position} has {len(header.elements)} "
            "elements: a GS segment has 8",
        )
        return len(segments)

    group = FunctionalGroup(header)
    interchange.groups.append(group)
    index = start + 1
    while index < len(segments):
        segment = segments[index]
        if segment.tag == "ST":
            index = _read_set(group, segments, index)
            continue
        if segment.tag == "GE":
            _check_ge(group, segment)
            return index + 1
        break
    group.codes.append(AK9_TRAILER_MISSING)
    group.reasons.append(
        f"group {group.control!r} has no GE trailer before position "
        f"{segments[min(index, len(segments) - 1)].position}"
    )
    return index


def _check_ge(group: FunctionalGroup, ge: Segment) -> None:
    group.declared_count = ge.element(1)
    if ge.element(2) != group.control:
        group.codes.append(AK9_CONTROL_NUMBER_MISMATCH)
        group.reasons.append(
            f"GE02 is {ge.element(2)!r} but GS06 is {group.control!r}: the group "
            "control numbers in header and trailer must be equal"
        )
    declared = ge.element(1)
    if not is_ascii_digits(declared) or int(declared) != len(group.sets):
        group.codes.append(AK9_SET_COUNT_MISMATCH)
        group.reasons.append(
            f"GE01 is {declared!r} but group {group.control!r} has "
            f"{len(group.sets)} transaction sets"
        )


def _read_set(group: FunctionalGroup, segments: list[Segment], start: int) -> int:
    """Read one ST..SE set from `start`; return the index after it."""
    header = segments[start]
    end = start + 1
    while end < len(segments) and segments[end].tag not in ("SE", "ST", "GE", "IEA"):
        end += 1
    closed = end < len(segments) and segments[end].tag == "SE"
    body = segments[start : end + 1] if closed else segments[start:end]
    tx = TransactionSet(header.element(1), header.element(2), body)
    group.sets.append(tx)

    if not re.fullmatch(r"[0-9]{3}", tx.set_id):
        tx.codes.append(AK5_INVALID_SET_ID)
        tx.reasons.append(
            f"ST01 is {tx.set_id!r}: expected a transaction set identifier of "
            "three digits, such as '856'"
        )
    if not re.fullmatch(r"[A-Za-z0-9]{4,9}", tx.control):
        tx.codes.append(AK5_INVALID_CONTROL_NUMBER)
        tx.reasons.append(
            f"ST02 is {tx.control!r}: expected a control number of 4 to 9 characters"
        )
    elif sum(1 for other in group.sets if other.control == tx.control) > 1:
        tx.codes.append(AK5_DUPLICATE_CONTROL_NUMBER)
        tx.reasons.append(
            f"ST02 {tx.control!r} is used twice in group {group.control!r}"
        )
    if not closed:
        tx.codes.append(AK5_TRAILER_MISSING)
        tx.reasons.append(f"transaction set {tx.control!r} has no SE trailer")
        return end

    trailer = segments[end]
    if trailer.element(2) != tx.control:
        tx.codes.append(AK5_CONTROL_NUMBER_MISMATCH)
        tx.reasons.append(
            f"SE02 is {trailer.element(2)!r} but ST02 is {tx.control!r}: the set "
            "control numbers in header and trailer must be equal"
        )
    declared = trailer.element(1)
    if not is_ascii_digits(declared) or int(declared) != len(body):
        tx.codes.append(AK5_SEGMENT_COUNT_MISMATCH)
        tx.reasons.append(
            f"SE01 is {declared!r} but transaction set {tx.control!r} has "
            f"{len(body)} segments from ST to SE"
        )
    return end + 1
