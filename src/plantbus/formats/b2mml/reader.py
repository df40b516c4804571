"""Turn a B2MML document into canonical events, or reject it with every problem.

A document passes four gates, and the first one that finds problems raises
`FormatError` listing all of its problems:

1. well-formed XML without a DTD;
2. a B2MML version and document kind that plantbus maps (see `kinds`);
3. the official XSD of its version and kind, from the configured schema folder;
4. rules the XSD cannot express: readable times with a UTC offset (or a
   configured plant time zone), end not before start, numeric quantities, no
   negative produced or consumed quantity, and event data that matches the
   catalogue schema of its type.

BatchML documents are validated against their XSD when the schema folder has
it and then rejected, because plantbus maps no batch record or recipe.

Event ids are uuid5 values of the document's SHA-256 digest, the event type
and the path of the mapped element, so a file dropped twice yields the same
ids and the event log's de-duplication by id absorbs the repeat. A file whose
bytes differ (even in whitespace) is a new document with new ids.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import datetime, tzinfo
from functools import cache
from pathlib import Path

from lxml import etree

from plantbus.errors import ConfigError, FormatError, FormatProblem, SchemaError
from plantbus.events.catalogue import Catalogue
from plantbus.events.envelope import Event
from plantbus.formats.b2mml.definitions import map_definitions
from plantbus.formats.b2mml.documents import compiled_schema, read_xml, validate
from plantbus.formats.b2mml.equipment import map_equipment
from plantbus.formats.b2mml.kinds import DocumentKind, detect_kind, schema_file
from plantbus.formats.b2mml.lots import map_lots
from plantbus.formats.b2mml.materials import check_quantities
from plantbus.formats.b2mml.performance import map_performance
from plantbus.formats.b2mml.schedule import map_schedule
from plantbus.formats.b2mml.values import Document, local_name, to_utc

logger = logging.getLogger("plantbus.formats.b2mml")

Mapper = Callable[[Document, datetime | None], list[Event]]
# The mappers of each document noun, run in this order.
_MAPPERS: dict[str, tuple[Mapper, ...]] = {
    "ProductionSchedule": (map_schedule,),
    "ProductionPerformance": (map_performance,),
    "MaterialInformation": (map_definitions, map_lots),
    "MaterialDefinition": (map_definitions,),
    "MaterialLot": (map_lots,),
    "EquipmentInformation": (map_equipment,),
    "Equipment": (map_equipment,),
}
# The reason each BatchML document kind maps to no event, and what to send instead.
_BATCHML_REASONS = {
    "BatchProductionRecord": (
        "plantbus does not map batch production records to events; send the "
        "batch's produced and consumed material as a ProductionPerformance "
        "document"
    ),
    "BatchInformation": (
        "plantbus maps no recipe or batch list to events; send released "
        "batches as a ProductionSchedule document"
    ),
    "GeneralRecipe": (
        "plantbus maps no recipe to events; send material definitions as a "
        "MaterialInformation document"
    ),
}

# Start and end elements that appear side by side under one parent.
_TIME_PAIRS = (
    ("StartTime", "EndTime"),
    ("EarliestStartTime", "LatestEndTime"),
    ("ActualStartTime", "ActualEndTime"),
)
_TIME_ELEMENTS = frozenset(
    {
        "CreationDateTime",
        "PublishedDate",
        *(name for pair in _TIME_PAIRS for name in pair),
    }
)


def parse_b2mml(
    data: bytes,
    source_name: str,
    schema_dir: Path,
    plant: str | None = None,
    *,
    default_tz: tzinfo | None = None,
) -> list[Event]:
    """Validate a B2MML document and map it to canonical events.

    `plant` sets the events' `plant` attribute and the plant of released
    orders. `default_tz` is the plant's time zone for times written without a
    UTC offset; without it such times are rejected.
    """
    tree = read_xml(data, source_name)
    root = tree.getroot()
    kind = detect_kind(root, source_name)
    if kind.family == "BatchML":
        _reject_batchml(tree, kind, schema_dir, source_name)
    schema = compiled_schema(schema_file(schema_dir, kind))
    problems = validate(tree, schema)
    if problems:
        raise FormatError(source_name, problems)

    doc = Document(
        root=root,
        namespace=kind.namespace,
        version=kind.version,
        kind=kind.kind,
        source_name=source_name,
        digest=hashlib.sha256(data).hexdigest(),
        plant=plant,
        default_tz=default_tz,
    )
    _check_times(doc)
    check_quantities(doc)
    area = doc.child(root, "ApplicationArea")
    created = doc.time(area, "CreationDateTime") if area is not None else None
    events = [event for mapper in _MAPPERS[kind.kind] for event in mapper(doc, created)]
    if doc.problems:
        raise FormatError(source_name, _unique(doc.problems))

    _check_catalogue(doc, events)
    logger.debug(
        "Mapped %r (%s %s) to %d events.",
        source_name,
        kind.version,
        kind.kind,
        len(events),
    )
    return events


def _reject_batchml(
    tree: etree._ElementTree, kind: DocumentKind, schema_dir: Path, source_name: str
) -> None:
    """Raise FormatError that names why a BatchML document maps to no event.

    The XSD problems follow the reason when the schema folder has the XSD, so
    that a sender also learns what to fix in the document itself.
    """
    root = tree.getroot()
    line = root.sourceline if isinstance(root.sourceline, int) else None
    problems = [
        FormatProblem(
            f"/{local_name(root)}",
            f"is a BatchML {kind.version} {kind.kind} document; "
            f"{_BATCHML_REASONS[kind.kind]}",
            line=line,
            details={
                "rule": "supported document kind",
                "kind": kind.kind,
                "version": kind.version,
            },
        )
    ]
    try:
        path = schema_file(schema_dir, kind)
    except ConfigError:
        path = None
    if path is not None:
        problems.extend(validate(tree, compiled_schema(path)))
    raise FormatError(source_name, problems)


def _check_times(doc: Document) -> None:
    """Record unreadable times and every end that lies before its start."""
    for element in doc.root.iter("{*}*"):
        parent = element.getparent()
        if local_name(element) in _TIME_ELEMENTS and parent is not None:
            doc.time(parent, local_name(element))
        for start_name, end_name in _TIME_PAIRS:
            start = doc.child(element, start_name)
            end = doc.child(element, end_name)
            if start is None or end is None:
                continue
            try:
                starts_at = to_utc((start.text or "").strip(), doc.default_tz)
                ends_at = to_utc((end.text or "").strip(), doc.default_tz)
            except ValueError:
                continue  # already recorded for the element itself
            if ends_at < starts_at:
                doc.problem(
                    end,
                    (end.text or "").strip(),
                    f"is before {start_name} {(start.text or '').strip()!r}; "
                    f"{end_name} must not be before {start_name}",
                )


def _check_catalogue(doc: Document, events: list[Event]) -> None:
    """Raise FormatError if an event's data breaks the catalogue schema of its type."""
    catalogue = _catalogue()
    problems: list[FormatProblem] = []
    for event in events:
        try:
            catalogue.validate(event)
        except SchemaError as exc:
            where = doc.origins.get(event.id, "/")
            problems.extend(
                FormatProblem(
                    location=where,
                    message=f"maps to {event.type} whose {violation.describe()}",
                    details={
                        "value": violation.value,
                        "rule": violation.rule,
                        "field": violation.path,
                    },
                )
                for violation in exc.violations
            )
    if problems:
        raise FormatError(doc.source_name, problems)


@cache
def _catalogue() -> Catalogue:
    return Catalogue.load()


def _unique(problems: list[FormatProblem]) -> list[FormatProblem]:
    """Drop repeated problems; a quantity check and the mapping may find the same."""
    seen = set()
    unique = []
    for problem in problems:
        key = (problem.location, problem.message)
        if key not in seen:
            seen.add(key)
            unique.append(problem)
    return unique
