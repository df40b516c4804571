"""Pipeline steps: validate, enrich, map, filter and route.

A step works on a `WorkItem`: the event, the bindings that enrich steps add
for later expressions (`$item` after `enrich: {into: item}`), and the sinks
that a route step chose. The deliver step is in `delivery.py`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from fnmatch import translate
from typing import Any, Protocol

from plantbus.config.model import EnrichOptions, MapOptions, RouteRule
from plantbus.errors import PlantbusError
from plantbus.events.catalogue import Catalogue
from plantbus.events.envelope import Event
from plantbus.pipeline.mapping import Mapping, compile_expression


class StepFailed(PlantbusError):
    """A step could not process an event; the event goes to the dead letters."""


@dataclass(slots=True)
class WorkItem:
    """One event on its way through a pipeline."""

    event: Event
    bindings: dict[str, Any] = field(default_factory=dict)
    sinks: list[str] | None = None
    _document: dict[str, Any] | None = None

    @property
    def document(self) -> dict[str, Any]:
        """Return the event as a CloudEvents JSON object, the input of expressions."""
        if self._document is None:
            self._document = self.event.to_dict()
        return self._document

    def replace_event(self, event: Event) -> None:
        """Swap in a changed event and drop the cached document."""
        self.event = event
        self._document = None


class Step(Protocol):
    """One step of a pipeline; returns False to drop the event."""

    name: str

    def run(self, item: WorkItem) -> bool | Awaitable[bool]: ...


class TypeMatcher:
    """Match event types against patterns with `*` wildcards, caching results."""

    def __init__(self, patterns: list[str]) -> None:
        self.patterns = patterns
        self._regex = re.compile("|".join(translate(p) for p in patterns))
        self._cache: dict[str, bool] = {}

    def __call__(self, event_type: str) -> bool:
        matched = self._cache.get(event_type)
        if matched is None:
            matched = self._regex.match(event_type) is not None
            self._cache[event_type] = matched
        return matched


class ValidateStep:
    """Check the event's data against the catalogue schema of its type."""

    name = "validate"

    def __init__(self, catalogue: Catalogue, *, allow_unknown_types: bool) -> None:
        self.catalogue = catalogue
        self.allow_unknown_types = allow_unknown_types

    def run(self, item: WorkItem) -> bool:
        self.catalogue.validate(item.event, allow_unknown=self.allow_unknown_types)
        return True


class Lookups(Protocol):
    """A system that can look records up by kind and key, such as the ERP."""

    async def lookup(self, kind: str, key: str) -> dict[str, Any] | None: ...


class EnrichStep:
    """Look a record up in another system and bind it for later expressions."""

    name = "enrich"

    def __init__(
        self, options: EnrichOptions, lookups: Lookups, cache_seconds: float = 300.0
    ) -> None:
        self.options = options
        self.lookups = lookups
        self.key = compile_expression(options.key)
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._pending: dict[str, asyncio.Future[dict[str, Any] | None]] = {}

    async def run(self, item: WorkItem) -> bool:
        key = self.key.evaluate(item.document, item.bindings)
        if key is None or not isinstance(key, (str, int)):
            if self.options.required:
                raise StepFailed(
                    f"Enrich step `{self.options.into}`: the key expression "
                    f"{self.options.key!r} gave {key!r} for event {item.event.id!r}; "
                    f"expected a string or integer."
                )
            item.bindings[self.options.into] = None
            return True

        record = await self._lookup(str(key))
        if record is None and self.options.required:
            raise StepFailed(
                f"Enrich step `{self.options.into}`: no {self.options.lookup} "
                f"{key!r} was found in system {self.options.system!r} for event "
                f"{item.event.id!r}."
            )
        item.bindings[self.options.into] = record
        return True

    async def _lookup(self, key: str) -> dict[str, Any] | None:
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < self.cache_seconds:
            return cached[1]

        # Concurrent events with the same key share one look-up, so that a
        # burst does not send the same query to the other system many times.
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        pending = asyncio.ensure_future(self.lookups.lookup(self.options.lookup, key))
        self._pending[key] = pending
        try:
            record = await pending
        finally:
            del self._pending[key]
        self._cache[key] = (now, record)
        return record


class MapStep:
    """Replace the event's data with the result of a JSONata mapping."""

    name = "map"

    def __init__(self, options: MapOptions) -> None:
        self.options = options
        self.mapping = Mapping(
            options.expression
            if options.expression is not None
            else options.fields or {}
        )

    def run(self, item: WorkItem) -> bool:
        data = self.mapping.apply(item.document, item.bindings)
        event = item.event
        mapped = Event(
            id=event.id,
            source=event.source,
            type=self.options.type or event.type,
            data=data,
            subject=event.subject,
            time=event.time,
            datacontenttype="application/json",
            # The data has a new shape, so the old type's schema no longer fits.
            dataschema=None,
            correlationid=event.correlationid,
            causationid=event.causationid,
            plant=event.plant,
            partitionkey=event.partitionkey,
            traceparent=event.traceparent,
            extensions=dict(event.extensions),
        )
        item.replace_event(mapped)
        return True


class FilterStep:
    """Drop events for which a JSONata condition is false or undefined."""

    name = "filter"

    def __init__(self, condition: str) -> None:
        self.condition = compile_expression(condition)

    def run(self, item: WorkItem) -> bool:
        return self.condition.evaluate(item.document, item.bindings) is True


class RouteStep:
    """Choose the sinks by event type or content; the first matching rule wins."""

    name = "route"

    def __init__(self, rules: list[RouteRule]) -> None:
        self.rules = [
            (
                TypeMatcher(rule.types) if rule.types else None,
                compile_expression(rule.when) if rule.when else None,
                rule.to,
            )
            for rule in rules
        ]

    @property
    def sink_names(self) -> set[str]:
        """Return every sink that a rule of this step can choose."""
        return {sink for _, _, sinks in self.rules for sink in sinks}

    def run(self, item: WorkItem) -> bool:
        for types, condition, sinks in self.rules:
            if types is not None and not types(item.event.type):
                continue
            if (
                condition is not None
                and condition.evaluate(item.document, item.bindings) is not True
            ):
                continue
            item.sinks = sinks
            return True
        # No rule matched: nothing to deliver, which is not an error.
        return False
