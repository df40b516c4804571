"""A sink that hands released production orders to an MES as B2MML files.

Each `production.order.released.v1` event becomes one V0600
ProcessProductionSchedule file in the target folder (see
`plantbus.formats.b2mml.orders`). The file is written under a temporary
name that starts with a dot, flushed to disk and renamed into place, so a
reader of the folder never reads half a file, provided it skips dot files.
The file name comes from the event id, so a redelivery after a crash
replaces the same file instead of adding a second order.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import uuid
from pathlib import Path

import xmlschema

from plantbus.connectors.base import Sink
from plantbus.errors import PermanentDeliveryError, RetryableDeliveryError
from plantbus.events.envelope import Event
from plantbus.formats.b2mml.documents import compiled_schema, read_xml, validate
from plantbus.formats.b2mml.kinds import DocumentKind, schema_file
from plantbus.formats.b2mml.orders import write_order_released
from plantbus.formats.b2mml.writer import NAMESPACE_V0600

logger = logging.getLogger("plantbus.connectors.b2mml_folder")

# Event ids that are used unchanged as file names. Other ids are hashed.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,150}$")
_SCHEDULE_KIND = DocumentKind(
    namespace=NAMESPACE_V0600,
    version="V0600",
    kind="ProductionSchedule",
    verb="Process",
)


def file_name(event_id: str) -> str:
    """Return the file name for an event id, the same on every delivery."""
    if _SAFE_NAME.match(event_id):
        return f"{event_id}.xml"
    # Ids with path separators or other odd characters keep a readable part
    # and gain a digest, so that two such ids never share a file.
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", event_id)[:100].lstrip(".")
    digest = hashlib.sha256(event_id.encode()).hexdigest()[:16]
    return f"{readable or 'event'}-{digest}.xml"


class B2mmlFolderSink(Sink):
    """Write each released order as a B2MML ProductionSchedule file into a folder.

    With `schema_dir`, each document is validated against the V0600
    ProductionSchedule XSD from that folder before it is written.
    """

    def __init__(self, name: str, path: Path, schema_dir: Path | None = None) -> None:
        self.name = name
        self.path = path
        self.schema_dir = schema_dir
        self._schema: xmlschema.XMLSchema10 | None = None

    async def start(self) -> None:
        """Create the target folder and compile the XSD, if one is configured."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self.schema_dir is not None:
            path = schema_file(self.schema_dir, _SCHEDULE_KIND)
            self._schema = await asyncio.to_thread(compiled_schema, path)

    async def deliver(self, event: Event) -> str | None:
        """Write the event's schedule document and return its file name."""
        try:
            document = write_order_released(event)
        except ValueError as exc:
            raise PermanentDeliveryError(str(exc)) from exc
        name = file_name(event.id)
        if self.schema_dir is not None:
            self._check(event, name, document)

        try:
            await asyncio.to_thread(self._write, name, document)
        except OSError as exc:
            raise RetryableDeliveryError(
                f"Failed to write the schedule of event {event.id!r} to "
                f"{str(self.path / name)!r}: {exc}."
            ) from exc
        logger.info(
            "Wrote %s for order %r.",
            name,
            event.data.get("order_id"),
            extra={"event_id": event.id, "correlation_id": event.correlationid},
        )
        return f"file:{name}"

    def describe(self) -> dict[str, object]:
        """Return the sink's name, kind and folder for the dashboard."""
        return {**super().describe(), "path": str(self.path)}

    def _check(self, event: Event, name: str, document: bytes) -> None:
        assert self._schema is not None, "start() compiles the schema first"
        problems = validate(read_xml(document, name), self._schema)
        if problems:
            listed = "; ".join(f"{p.location}: {p.message}" for p in problems)
            raise PermanentDeliveryError(
                f"The ProductionSchedule built from event {event.id!r} does not "
                f"validate against the V0600 XSD: {listed}."
            )

    def _write(self, name: str, document: bytes) -> None:
        target = self.path / name
        temporary = self.path / f".{name}.{uuid.uuid4().hex}.tmp"
        try:
            with temporary.open("wb") as handle:
                handle.write(document)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

        # The rename is durable only once the folder's entry is on disk.
        folder = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
