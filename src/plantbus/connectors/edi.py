"""A folder source for supplier EDI: X12 856 and EDIFACT DESADV files.

Each complete file in the inbox is read as one interchange. Its ship notices
are ingested as `supply.asn.received.v1` events, then its acknowledgement
(X12 TA1/997 or EDIFACT CONTRL) is written into the outbox folder, and the
file moves to `done/`. A file with any rejected interchange, group or message
also becomes a dead letter with its original bytes and the reasons, and moves
to `rejected/`. The accepted ship notices of the same file stay ingested,
because the acknowledgement reports them to the sender as accepted.

Order and crash safety: events are appended before the acknowledgement is
written, so the sender never sees an acceptance for events the log lacks.
After a crash between the two steps, the file is read again: the log drops
the repeated events by id, and a second acknowledgement file is written.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from plantbus.connectors.base import Ingest, Reject
from plantbus.connectors.files import FolderSource, _free_name
from plantbus.errors import EdiError, EventError
from plantbus.formats.shipnotice import EdiOutcome

logger = logging.getLogger("plantbus.connectors.edi")

# Read one interchange: bytes and file name in, outcome out; raises EdiError.
EdiReader = Callable[[bytes, str], EdiOutcome]

CONTENT_TYPES = {"x12": "application/edi-x12", "edifact": "application/edifact"}


class EdiFolderSource(FolderSource):
    """Ingest EDI ship notices from an inbox and acknowledge each file in an outbox."""

    def __init__(
        self,
        name: str,
        inbox: Path,
        reader: EdiReader,
        *,
        standard: str,
        outbox: Path,
        poll_interval: float = 1.0,
    ) -> None:
        super().__init__(
            name,
            inbox,
            # The base class's parser; `_process` below calls `reader` itself.
            lambda data, file_name: list(reader(data, file_name).events),
            poll_interval=poll_interval,
            content_type=CONTENT_TYPES[standard],
        )
        self.reader = reader
        self.standard = standard
        self.outbox = outbox

    async def run(self, ingest: Ingest, reject: Reject, stop: asyncio.Event) -> None:
        """Create the outbox, then poll the inbox until `stop` is set."""
        self.outbox.mkdir(parents=True, exist_ok=True)
        await super().run(ingest, reject, stop)

    async def _process(self, path: Path, ingest: Ingest, reject: Reject) -> None:
        if self._seen[path.name].size > self.max_bytes:
            # The folder source rejects oversized files without reading them.
            await super()._process(path, ingest, reject)
            return

        data = path.read_bytes()
        try:
            outcome = await asyncio.to_thread(self.reader, data, path.name)
        except EdiError as exc:
            problem = {
                "segment": exc.segment,
                "position": exc.position,
                "element": exc.element,
                "value": exc.value,
                "rule": exc.rule,
            }
            await self._reject(path, data, str(exc), [problem], reject)
            return

        try:
            await ingest(outcome.events)
        except EventError as exc:
            # The reader built an event that the catalogue rejects: a fault of
            # plantbus, not of the sender, so no acknowledgement is written.
            problems = [
                {"location": v.path, "value": v.value, "message": v.rule}
                for v in exc.violations
            ]
            await self._reject(path, data, str(exc), problems, reject)
            return

        acknowledgement = self._write_acknowledgement(path.name, outcome)
        if outcome.rejections:
            message = (
                f"Interchange file {path.name!r} was rejected in part or whole "
                f"({len(outcome.events)} ship notices accepted): "
                + "; ".join(r.describe() for r in outcome.rejections)
            )
            problems = [
                {"location": r.location, "message": r.message}
                for r in outcome.rejections
            ]
            await self._reject(path, data, message, problems, reject)
            return

        target = _free_name(self.done_dir, path.name)
        path.replace(target)
        logger.info(
            "Ingested %s for source %r: %d ASN events, %s written, moved to %s.",
            path.name,
            self.name,
            len(outcome.events),
            acknowledgement.name if acknowledgement else "no acknowledgement",
            target,
        )

    def _write_acknowledgement(self, name: str, outcome: EdiOutcome) -> Path | None:
        """Write the acknowledgement to a hidden temporary file, then rename it."""
        if outcome.acknowledgement is None:
            return None
        stem = os.path.splitext(name)[0]
        suffix = ".x12" if self.standard == "x12" else ".edi"
        target = _free_name(
            self.outbox, f"{stem}.{outcome.acknowledgement_kind.lower()}{suffix}"
        )
        temporary = self.outbox / f".{target.name}.tmp"
        temporary.write_bytes(outcome.acknowledgement)
        temporary.replace(target)
        return target
