"""The catalogue of canonical event types and the validation of their data.

Each event type has one JSON Schema file under `schemas/`, named after the
type (`production.workorder.completed.v1.json`). The file's `x-plantbus` block
holds the catalogue entry: owning domain, owner, SLA class, schema version and
the data field that supplies the partition key.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema

from plantbus.errors import SchemaError, Violation
from plantbus.events.envelope import Event
from plantbus.events.validation import compile_schema

# Most violations listed for one event.
MAX_VIOLATIONS = 100

DOMAINS = (
    "production",
    "inventory",
    "quality",
    "maintenance",
    "logistics",
    "supply",
    "masterdata",
)


@dataclass(frozen=True, slots=True)
class SlaClass:
    """A delivery promise: the p95 latency from append to delivery."""

    name: str
    target_seconds: float
    description: str


SLA_CLASSES = {
    sla.name: sla
    for sla in (
        SlaClass("critical", 5.0, "stops production or quality if late"),
        SlaClass("operational", 30.0, "postings that people wait for on shift"),
        SlaClass("batch", 900.0, "planning and master data; minutes are fine"),
    )
}


@dataclass(frozen=True)
class EventType:
    """One versioned event type of the catalogue with its JSON Schema."""

    name: str
    version: str
    domain: str
    owner: str
    sla: SlaClass
    description: str
    partition_field: str
    status: str
    schema: dict[str, Any]

    @property
    def schema_id(self) -> str:
        """Return the URI that events of this type carry in `dataschema`."""
        return str(self.schema["$id"])

    @cached_property
    def _fast_check(self) -> Callable[[Any], bool]:
        compiled = compile_schema(self.schema)
        if compiled is not None:
            return compiled

        # A schema outside the compiled subset goes through fastjsonschema.
        general = fastjsonschema.compile(self.schema)

        def check(data: Any) -> bool:
            try:
                general(data)
            except fastjsonschema.JsonSchemaException:
                return False
            return True

        return check

    @cached_property
    def _full_check(self) -> jsonschema.Draft202012Validator:
        return jsonschema.Draft202012Validator(self.schema)

    @cached_property
    def _time_fields(self) -> tuple[str, ...]:
        """Return the top-level data fields that hold timestamps."""
        return tuple(
            name
            for name, definition in self.schema.get("properties", {}).items()
            if definition.get("$ref") == "#/$defs/timestamp"
        )

    def violations(self, data: Any) -> list[Violation]:
        """Return the rules of the schema that `data` breaks, sorted by path.

        At most MAX_VIOLATIONS are listed; a last entry counts how many more
        there were, so that a hostile event cannot make the response huge.
        """
        found = [] if self._fast_check(data) else self._all_violations(data)
        found.extend(self._time_violations(data, {v.path for v in found}))
        found.sort(key=lambda violation: violation.path)
        if len(found) > MAX_VIOLATIONS:
            left_out = len(found) - MAX_VIOLATIONS
            found = found[:MAX_VIOLATIONS]
            found.append(
                Violation("data", "…", f"{left_out} more violations were left out")
            )
        return found

    def _time_violations(self, data: Any, reported: set[str]) -> list[Violation]:
        """Check that timestamps that match the pattern are real dates and times."""
        if not isinstance(data, dict):
            return []
        found = []
        for name in self._time_fields:
            value = data.get(name)
            if not isinstance(value, str) or f"data.{name}" in reported:
                continue
            try:
                # The schema's pattern checked the format already; this checks
                # the calendar, such as 30 February.
                # A leap second (:60) is valid RFC 3339 but unknown to datetime.
                text = value[:17] + "59" + value[19:] if value[17:19] == "60" else value
                datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                found.append(
                    Violation(
                        f"data.{name}",
                        value,
                        "is not a real date and time (check the day of the month "
                        "and the UTC offset)",
                    )
                )
        return found

    def _all_violations(self, data: Any) -> list[Violation]:
        # The compiled check stops at the first error; the full validator lists
        # all of them so that a sender can fix every field in one go.
        found: list[Violation] = []
        for error in self._full_check.iter_errors(data):
            path = "data" + "".join(
                f"[{part}]" if isinstance(part, int) else f".{part}"
                for part in error.absolute_path
            )
            if error.validator == "additionalProperties":
                allowed = ", ".join(sorted(error.schema.get("properties", {})))
                found.extend(
                    Violation(
                        f"{path}.{name}",
                        error.instance[name],
                        f"the schema defines no such field; allowed: {allowed}",
                    )
                    for name in error.instance
                    if name not in error.schema.get("properties", {})
                )
                continue
            if error.validator == "required" and isinstance(error.instance, dict):
                # Name the missing field in the path, so that it reads like
                # every other violation. jsonschema reports the same `required`
                # list once per missing field, hence the membership test.
                for name in error.validator_value:
                    missing = Violation(f"{path}.{name}", None, "the field is required")
                    if name not in error.instance and missing not in found:
                        found.append(missing)
                continue
            found.append(Violation(path, error.instance, _rule(error)))
        return found


def _rule(error: jsonschema.ValidationError) -> str:
    """Describe a failed schema keyword as a rule a sender can act on."""
    keyword = error.validator
    expected: Any = error.validator_value
    schema: Any = error.schema
    if keyword == "pattern":
        if isinstance(schema, dict) and "description" in schema:
            return f"expected {schema['description']}"
        return f"must match the pattern {expected!r}"
    if keyword == "type":
        return f"expected a JSON {expected}"
    if keyword == "enum":
        return f"expected one of {', '.join(repr(v) for v in expected)}"
    if keyword in ("minLength", "maxLength", "minItems", "maxItems", "minimum"):
        return f"violates {keyword} {expected}"
    return str(error.message)


class Catalogue:
    """The event types of the catalogue, by name."""

    def __init__(self, types: Iterable[EventType]) -> None:
        self._types = {event_type.name: event_type for event_type in types}

    @classmethod
    def load(cls, folder: Path | None = None) -> Catalogue:
        """Load every schema file of a folder, by default the built-in catalogue."""
        if folder is None:
            root = resources.files("plantbus.events") / "schemas"
            documents = [
                json.loads(entry.read_text("utf-8"))
                for entry in root.iterdir()
                if entry.name.endswith(".json")
            ]
        else:
            documents = [
                json.loads(path.read_text("utf-8"))
                for path in sorted(folder.glob("*.json"))
            ]
        return cls(_event_type(document) for document in documents)

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self) -> Any:
        return iter(sorted(self._types.values(), key=lambda t: t.name))

    def __len__(self) -> int:
        return len(self._types)

    def get(self, name: str) -> EventType | None:
        """Return the event type called `name`, or None when it is unknown."""
        return self._types.get(name)

    def validate(self, event: Event, *, allow_unknown: bool = False) -> None:
        """Check an event's data against its type's schema and fill its defaults.

        Raises SchemaError listing every broken rule. An event whose type is not
        in the catalogue is rejected unless `allow_unknown` is set.
        """
        event_type = self._types.get(event.type)
        if event_type is None:
            if allow_unknown:
                return
            known = ", ".join(sorted(self._types))
            raise SchemaError(
                event.id,
                [
                    Violation(
                        "type",
                        event.type,
                        f"the type is not in the event catalogue; known types: {known}",
                    )
                ],
            )

        violations = event_type.violations(event.data)
        if violations:
            raise SchemaError(event.id, violations)

        if event.dataschema is None:
            event.dataschema = event_type.schema_id
        if event.partitionkey is None:
            event.partitionkey = (
                str(event.data[event_type.partition_field])
                if (event_type.partition_field in event.data)
                else None
            )


def _event_type(document: dict[str, Any]) -> EventType:
    meta = document["x-plantbus"]
    return EventType(
        name=meta["type"],
        version=meta["version"],
        domain=meta["domain"],
        owner=meta["owner"],
        sla=SLA_CLASSES[meta["sla"]],
        description=document.get("description", ""),
        partition_field=meta["partitionkey"],
        status=meta.get("status", "active"),
        schema=document,
    )
