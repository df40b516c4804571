"""The CloudEvents 1.0 envelope that every plantbus event travels in.

The envelope is checked against the CloudEvents 1.0 attribute rules here; the
data of a catalogue event type is checked against its JSON Schema by
`plantbus.events.catalogue`.
"""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from plantbus.errors import EnvelopeError, Violation

SPEC_VERSION = "1.0"

# Attributes that CloudEvents 1.0 defines; everything else is an extension.
CONTEXT_ATTRIBUTES = frozenset(
    {
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "time",
        "datacontenttype",
        "dataschema",
    }
)
# Extension attributes that plantbus gives a meaning to.
PLANTBUS_EXTENSIONS = (
    "correlationid",
    "causationid",
    "plant",
    "partitionkey",
    "traceparent",
)

_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")
# RFC 3339 date-time: seconds are required and the offset is Z or +hh:mm.
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?"
    r"([Zz]|[+-](\d{2}):(\d{2}))\Z"
)
# RFC 2046 media type: type "/" subtype, then optional parameters.
_MEDIA_TYPE = re.compile(r"^[\w.+-]+/[\w.+-]+(\s*;.*)?$")
_INT32 = (-(2**31), 2**31 - 1)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# W3C Trace Context `traceparent`: version, trace id, parent id, flags.
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 timestamp into a timezone-aware datetime."""
    match = _RFC3339.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not an RFC 3339 timestamp")
    if match.group(9) is not None and int(match.group(9)) > 23:
        raise ValueError(f"{text!r} has a UTC offset beyond 23 hours")
    if match.group(10) is not None and int(match.group(10)) > 59:
        raise ValueError(f"{text!r} has a UTC offset with more than 59 minutes")

    # datetime.fromisoformat takes at most microseconds; RFC 3339 allows more.
    fraction = match.group(7) or ""
    trimmed = text.replace(fraction, fraction[:7]) if len(fraction) > 7 else text
    return datetime.fromisoformat(trimmed.replace("z", "Z"))


def format_time(moment: datetime) -> str:
    """Format a timezone-aware datetime as an RFC 3339 UTC timestamp."""
    if moment.tzinfo is None:
        raise ValueError(f"{moment!r} has no timezone; plantbus times must be aware")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def utc_now() -> str:
    """Return the current time as an RFC 3339 UTC timestamp."""
    return format_time(datetime.now(UTC))


@dataclass(slots=True)
class Event:
    """One CloudEvents 1.0 event with the plantbus extension attributes."""

    id: str
    source: str
    type: str
    data: Any = None
    subject: str | None = None
    time: str | None = None
    datacontenttype: str | None = "application/json"
    dataschema: str | None = None
    correlationid: str | None = None
    causationid: str | None = None
    plant: str | None = None
    partitionkey: str | None = None
    traceparent: str | None = None
    # Binary data (`data_base64` in the JSON format); exclusive with `data`.
    data_binary: bytes | None = None
    extensions: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        type: str,
        source: str,
        data: Any,
        *,
        subject: str | None = None,
        time: str | datetime | None = None,
        **attributes: Any,
    ) -> Event:
        """Create a new event with a fresh id and the current time as default."""
        if isinstance(time, datetime):
            time = format_time(time)
        event = cls(
            id=str(uuid.uuid4()),
            source=source,
            type=type,
            data=data,
            subject=subject,
            time=time or utc_now(),
        )
        for name, value in attributes.items():
            if name in PLANTBUS_EXTENSIONS or name in ("datacontenttype", "dataschema"):
                setattr(event, name, value)
            else:
                event.extensions[name] = value
        return event

    @property
    def key(self) -> str:
        """Return the key that orders this event: partition key, else subject."""
        return self.partitionkey or self.subject or self.id

    def to_dict(self) -> dict[str, Any]:
        """Return the event in the CloudEvents JSON format, as a dict."""
        out: dict[str, Any] = {
            "specversion": SPEC_VERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
        }
        for name in (
            "subject",
            "time",
            "datacontenttype",
            "dataschema",
            *PLANTBUS_EXTENSIONS,
        ):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out.update(self.extensions)
        if self.data_binary is not None:
            out["data_base64"] = base64.b64encode(self.data_binary).decode("ascii")
        elif self.data is not None:
            out["data"] = self.data
        return out

    def to_json(self) -> bytes:
        """Serialise the event in the CloudEvents JSON format."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, body: bytes | str) -> Event:
        """Parse and check one event in the CloudEvents JSON format."""
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise EnvelopeError(
                None, [Violation("$", _excerpt(body), f"is not valid JSON ({exc})")]
            ) from exc
        return cls.from_dict(document)

    @classmethod
    def from_dict(cls, document: Any) -> Event:
        """Check a CloudEvents JSON object against the 1.0 rules and build the event."""
        violations = check_envelope(document)
        event_id = document.get("id") if isinstance(document, dict) else None
        if violations:
            raise EnvelopeError(
                event_id if isinstance(event_id, str) else None, violations
            )
        return cls._build(document)

    @classmethod
    def _build(cls, document: dict[str, Any]) -> Event:
        event = cls(
            id=document["id"],
            source=document["source"],
            type=document["type"],
            data=document.get("data"),
            subject=document.get("subject"),
            time=document.get("time"),
            datacontenttype=document.get("datacontenttype"),
            dataschema=document.get("dataschema"),
        )
        if document.get("data_base64") is not None:
            event.data_binary = base64.b64decode(document["data_base64"])
        for name, value in document.items():
            if name in CONTEXT_ATTRIBUTES or name in ("data", "data_base64"):
                continue
            if value is None:
                continue
            if name in PLANTBUS_EXTENSIONS:
                setattr(event, name, value)
            else:
                event.extensions[name] = value
        return event

    @classmethod
    def from_trusted(cls, body: bytes) -> Event:
        """Build an event from bytes that plantbus itself checked and wrote."""
        return cls._build(orjson.loads(body))


def check_envelope(document: Any) -> list[Violation]:
    """Return every CloudEvents 1.0 rule that a JSON object breaks."""
    if not isinstance(document, dict):
        return [Violation("$", _excerpt(document), "an event must be a JSON object")]
    violations: list[Violation] = []

    for name in ("specversion", "id", "source", "type"):
        value = document.get(name)
        if value is None:
            violations.append(Violation(name, None, "the attribute is required"))
        elif not isinstance(value, str):
            violations.append(Violation(name, value, "expected a string"))
        elif value == "":
            violations.append(Violation(name, value, "must not be empty"))
    if isinstance(document.get("specversion"), str) and document["specversion"] not in (
        "",
        SPEC_VERSION,
    ):
        violations.append(
            Violation(
                "specversion",
                document["specversion"],
                f"only CloudEvents {SPEC_VERSION!r} is supported",
            )
        )

    violations.extend(
        _check_optional_strings(document, ("subject", "datacontenttype", "dataschema"))
    )
    content_type = document.get("datacontenttype")
    if (
        isinstance(content_type, str)
        and content_type
        and not _MEDIA_TYPE.match(content_type)
    ):
        violations.append(
            Violation(
                "datacontenttype",
                content_type,
                "expected an RFC 2046 media type such as 'application/json'",
            )
        )

    time = document.get("time")
    if time is not None:
        if not isinstance(time, str):
            violations.append(Violation("time", time, "expected an RFC 3339 string"))
        else:
            try:
                parse_time(time)
            except ValueError:
                violations.append(
                    Violation(
                        "time",
                        time,
                        "expected an RFC 3339 timestamp such as '2026-03-01T06:00:00Z'",
                    )
                )

    if (
        "data" in document
        and document.get("data_base64") is not None
        and (document.get("data") is not None)
    ):
        violations.append(
            Violation(
                "data_base64",
                document["data_base64"],
                "`data` and `data_base64` must not both be present",
            )
        )

    violations.extend(_check_data_base64(document.get("data_base64")))
    violations.extend(_check_characters(document))
    violations.extend(_check_plantbus_extensions(document))

    for name, value in document.items():
        if name in CONTEXT_ATTRIBUTES or name in ("data", "data_base64"):
            continue
        if not _EXTENSION_NAME.match(name):
            violations.append(
                Violation(
                    name,
                    value,
                    "extension attribute names must be 1 to 20 lower-case "
                    "letters or digits",
                )
            )
            continue
        violations.extend(_check_extension_value(name, value))
    return violations


def _check_characters(document: dict[str, Any]) -> list[Violation]:
    """Reject control characters, which the CloudEvents String type excludes."""
    return [
        Violation(
            name,
            value,
            "must not contain control characters (U+0000 to "
            "U+001F or U+007F to U+009F)",
        )
        for name, value in document.items()
        if name not in ("data", "data_base64")
        and isinstance(value, str)
        and _CONTROL.search(value)
    ]


def _check_optional_strings(
    document: dict[str, Any], names: tuple[str, ...]
) -> list[Violation]:
    """Check attributes that may be absent but otherwise are non-empty strings."""
    violations = []
    for name in names:
        value = document.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            violations.append(Violation(name, value, "expected a string"))
        elif value == "":
            violations.append(Violation(name, value, "must not be empty when present"))
    return violations


def _check_plantbus_extensions(document: dict[str, Any]) -> list[Violation]:
    """Check the extensions that plantbus gives a meaning to: non-empty strings."""
    violations = _check_optional_strings(document, PLANTBUS_EXTENSIONS)
    traceparent = document.get("traceparent")
    if (
        isinstance(traceparent, str)
        and traceparent
        and not _TRACEPARENT.match(traceparent)
    ):
        violations.append(
            Violation(
                "traceparent",
                traceparent,
                "expected a W3C trace context such as "
                "'00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'",
            )
        )
    return violations


def _check_data_base64(value: Any) -> list[Violation]:
    if value is None:
        return []
    rule = "expected the data as a Base64 string (RFC 4648)"
    if not isinstance(value, str):
        return [Violation("data_base64", value, rule)]
    try:
        base64.b64decode(value, validate=True)
    except ValueError:
        # binascii.Error for bad Base64; plain ValueError for non-ASCII text.
        return [Violation("data_base64", _excerpt(value), rule)]
    return []


def _check_extension_value(name: str, value: Any) -> list[Violation]:
    if value is None or isinstance(value, (str, bool)):
        return []
    if isinstance(value, int):
        if _INT32[0] <= value <= _INT32[1]:
            return []
        return [Violation(name, value, "integers must fit in 32 signed bits")]
    return [
        Violation(
            name, value, "extension values must be a string, a boolean or an integer"
        )
    ]


def _excerpt(value: Any, limit: int = 80) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text if len(text) <= limit else text[:limit] + "…"
