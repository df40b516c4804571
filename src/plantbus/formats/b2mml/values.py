"""Values inside a B2MML document: element paths, times, quantities and event ids.

Every helper here works on one parsed document (`Document`), whose namespace
depends on the B2MML version, and reports broken rules as `FormatProblem`s so
that the reader can list all of them in one `FormatError`.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

from lxml import etree

from plantbus.errors import FormatProblem
from plantbus.events.envelope import Event, format_time

# Fixed namespace of the uuid5 event ids, so that ids stay the same across
# processes and releases.
EVENT_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:plantbus:formats:b2mml")

# xs:dateTime: the UTC offset is optional in XML Schema, so a document may carry
# plant-local times without one.
_XSD_DATE_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?"
    r"(Z|[+-]\d{2}:\d{2})?$"
)
# The catalogue's decimal-string rule for quantity values.
_CATALOGUE_DECIMAL = re.compile(r"^[0-9]+(\.[0-9]+)?$")

# DataType values (B2MML DataTypeType) whose QuantityString must be a number.
NUMERIC_DATA_TYPES = frozenset(
    {
        "Amount",
        "Measure",
        "Numeric",
        "Quantity",
        "decimal",
        "float",
        "double",
        "integer",
        "int",
        "long",
        "short",
        "byte",
        "unsignedByte",
        "unsignedInt",
        "unsignedLong",
        "unsignedShort",
        "positiveInteger",
        "negativeInteger",
        "nonNegativeInteger",
        "nonPositiveInteger",
    }
)


@dataclass(slots=True)
class Document:
    """One schema-valid B2MML document and the settings to read it with."""

    root: etree._Element
    namespace: str
    version: str
    kind: str
    source_name: str
    digest: str
    plant: str | None
    default_tz: tzinfo | None
    problems: list[FormatProblem] = field(default_factory=list)
    # Path of the element that each event id was derived from.
    origins: dict[str, str] = field(default_factory=dict)

    def tag(self, name: str) -> str:
        """Return the qualified tag of a B2MML element name in this document."""
        return f"{{{self.namespace}}}{name}"

    def child(self, element: etree._Element, name: str) -> etree._Element | None:
        """Return the first child element called `name`, or None."""
        return element.find(self.tag(name))

    def children(self, element: etree._Element, name: str) -> list[etree._Element]:
        """Return every child element called `name`, in document order."""
        return element.findall(self.tag(name))

    def text(self, element: etree._Element, name: str) -> str | None:
        """Return the stripped text of the child `name`; None when absent or empty."""
        found = self.child(element, name)
        if found is None or found.text is None:
            return None
        return found.text.strip() or None

    def problem(self, element: etree._Element, value: Any, rule: str) -> None:
        """Record a broken rule at `element`, to be raised with all others."""
        self.problems.append(problem_at(element, value, rule))

    def time(self, element: etree._Element, name: str) -> datetime | None:
        """Return the child `name` as an aware UTC datetime; None when absent.

        A value that cannot be read records a problem and returns None.
        """
        found = self.child(element, name)
        if found is None or not (found.text or "").strip():
            return None
        try:
            return to_utc((found.text or "").strip(), self.default_tz)
        except ValueError as exc:
            self.problem(found, (found.text or "").strip(), str(exc))
            return None

    @property
    def event_source(self) -> str:
        """Return the CloudEvents source of this document's events."""
        # Percent-encoding keeps file names with spaces a valid URI reference.
        return "b2mml:" + quote(self.source_name, safe="/._-~@+")

    def event_id(self, event_type: str, element: etree._Element) -> str:
        """Derive the id of the event that `element` maps to, stable across runs."""
        path = element_path(element)
        event_id = str(
            uuid.uuid5(EVENT_ID_NAMESPACE, f"{self.digest}:{event_type}:{path}")
        )
        self.origins[event_id] = path
        return event_id

    def event(
        self,
        event_type: str,
        element: etree._Element,
        data: dict[str, object],
        *,
        subject: str,
        time: datetime | None,
        correlationid: str | None = None,
        plant: str | None = None,
    ) -> Event:
        """Build the event that `element` maps to, partitioned by its `subject`.

        `plant` defaults to the document's plant.
        """
        return Event(
            id=self.event_id(event_type, element),
            source=self.event_source,
            type=event_type,
            data=data,
            subject=subject,
            time=format_time(time) if time else None,
            correlationid=correlationid,
            plant=plant if plant is not None else self.plant,
            partitionkey=subject,
        )


def local_name(element: etree._Element) -> str:
    """Return the tag of an element without its namespace."""
    return etree.QName(element).localname


def element_path(element: etree._Element) -> str:
    """Return the path of an element by local names, `[n]` where names repeat."""
    steps: list[str] = []
    node: etree._Element | None = element
    while node is not None:
        step = local_name(node)
        parent = node.getparent()
        if parent is not None:
            namesakes = [sibling for sibling in parent if sibling.tag == node.tag]
            if len(namesakes) > 1:
                step += f"[{namesakes.index(node) + 1}]"
        steps.append(step)
        node = parent
    return "/" + "/".join(reversed(steps))


def problem_at(element: etree._Element, value: Any, rule: str) -> FormatProblem:
    """Build a problem at an element: its path, line, value and the broken rule."""
    line = element.sourceline if isinstance(element.sourceline, int) else None
    message = f"{value!r} {rule}" if value is not None else rule
    return FormatProblem(
        location=element_path(element),
        message=message,
        line=line,
        details={"value": value, "rule": rule},
    )


def to_utc(text: str, default_tz: tzinfo | None) -> datetime:
    """Read an xs:dateTime as an aware UTC datetime; raise ValueError if unusable."""
    match = _XSD_DATE_TIME.match(text)
    if match is None:
        raise ValueError(
            "is not an xs:dateTime plantbus can read; expected a value such as "
            "'2026-03-01T06:00:00Z'"
        )
    if match.group(8) is None and default_tz is None:
        raise ValueError(
            "has no UTC offset; add 'Z' or an offset such as '+01:00' to the "
            "document, or configure the plant time zone (`default_tz`) to read "
            "local times"
        )

    # xs:dateTime allows 24:00:00, which is midnight at the end of the day.
    end_of_day = match.group(4) == "24"
    normal = text.replace("T24:", "T00:", 1) if end_of_day else text
    fraction = match.group(7) or ""
    if len(fraction) > 7:
        normal = normal.replace(fraction, fraction[:7], 1)
    try:
        moment = datetime.fromisoformat(normal)
    except ValueError as exc:
        raise ValueError(f"is not a valid date and time ({exc})") from exc
    if end_of_day:
        moment += timedelta(days=1)
    if moment.tzinfo is None:
        assert default_tz is not None
        moment = moment.replace(tzinfo=default_tz)
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError(
            "is outside the years 1 to 9999 in UTC that plantbus can store"
        ) from exc


def to_decimal(text: str) -> Decimal:
    """Read a quantity string as a finite Decimal; raise ValueError otherwise."""
    try:
        number = Decimal(text.strip())
    except InvalidOperation as exc:
        raise ValueError(
            "is not a decimal number; expected a value such as '12.5'"
        ) from exc
    if not number.is_finite():
        raise ValueError("is not a finite number; expected a value such as '12.5'")
    return number


def catalogue_decimal(text: str, number: Decimal) -> str:
    """Format a non-negative quantity as the catalogue's decimal string.

    The document's own spelling is kept when the catalogue accepts it, so that
    '1.000' stays '1.000'; other spellings ('1E3', '+5', '.5') are rewritten.
    """
    stripped = text.strip()
    if _CATALOGUE_DECIMAL.match(stripped):
        return stripped
    return format(abs(number) if number == 0 else number, "f")


def data_nouns(doc: Document, noun: str) -> list[etree._Element]:
    """Return the noun elements of a transaction document, or the bare root."""
    if local_name(doc.root) == noun:
        return [doc.root]
    data_area = doc.child(doc.root, "DataArea")
    return [] if data_area is None else doc.children(data_area, noun)


def contained_nouns(doc: Document, noun: str, container: str) -> list[etree._Element]:
    """Return the `noun` elements of a document, bare or inside `container` nouns.

    A MaterialDefinition can be a document's own noun (SyncMaterialDefinition)
    or sit inside a MaterialInformation, and both are found here.
    """
    if doc.kind == noun:
        return data_nouns(doc, noun)
    return [
        element
        for parent in data_nouns(doc, container)
        for element in doc.children(parent, noun)
    ]


@dataclass(frozen=True, slots=True)
class Property:
    """One Value of a B2MML property element: its ID, text and unit."""

    element: etree._Element
    name: str
    value: str
    unit: str | None


def read_properties(doc: Document, parent: etree._Element, tag: str) -> list[Property]:
    """Return one Property per Value with a ValueString of each `tag` child."""
    found = []
    for prop in doc.children(parent, tag):
        name = doc.text(prop, "ID")
        if name is None:
            continue
        for value in doc.children(prop, "Value"):
            text = value.find(doc.tag("ValueString"))
            if text is None:
                continue
            found.append(
                Property(
                    element=value,
                    name=name,
                    value=(text.text or "").strip(),
                    unit=doc.text(value, "UnitOfMeasure"),
                )
            )
    return found
