"""A source that watches an inbox folder for dropped documents.

The folder is polled. A file is picked up once it is complete: its size and
modification time are the same in two polls in a row, and its name does not
start with '.' or end with '.tmp' or '.part'. Writers that rename a finished
file into the folder are picked up on the second poll too.

Each file is parsed by a pluggable parser (for example `parse_b2mml` with its
schema folder bound), its events are ingested, and the file moves to `done/`.
A file that the parser or the event checks reject moves to `rejected/` and
becomes a dead letter with its original bytes.

Crash safety: a file moves to `done/` only after `ingest` returned, that is
after the log appended the events durably. After a crash between the append
and the move, the file is still in the inbox and is ingested again on
restart. The parser derives the same event ids from the same bytes, so the
log drops the repeated events as duplicates. A crash between storing a dead
letter and the move to `rejected/` stores the dead letter a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plantbus.connectors.base import Ingest, Reject, Source
from plantbus.errors import EventError, FormatError
from plantbus.events.envelope import Event
from plantbus.formats.parsed import ParsedFile
from plantbus.state.dead_letters import DeadLetter

logger = logging.getLogger("plantbus.connectors.files")

# Turn a document's bytes and its file name into events; raise FormatError.
# A parser that keeps the good records of a partly bad file (flat files)
# returns a ParsedFile, whose rejected records become one dead letter each.
Parser = Callable[[bytes, str], list[Event] | ParsedFile]

_IGNORED_SUFFIXES = (".tmp", ".part")


@dataclass(frozen=True, slots=True)
class _Stamp:
    size: int
    mtime_ns: int


class FolderSource(Source):
    """Ingest documents dropped into an inbox folder, then file them away."""

    can_wait = True

    def __init__(
        self,
        name: str,
        inbox: Path,
        parser: Parser,
        *,
        poll_interval: float = 1.0,
        done_dir: Path | None = None,
        rejected_dir: Path | None = None,
        content_type: str = "application/xml",
        max_bytes: int = 50 * 1024 * 1024,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError(
                f"poll_interval is {poll_interval!r}; expected a number of "
                f"seconds greater than 0."
            )
        self.name = name
        self.inbox = inbox
        self.parser = parser
        self.poll_interval = poll_interval
        self.done_dir = done_dir or inbox / "done"
        self.rejected_dir = rejected_dir or inbox / "rejected"
        self.content_type = content_type
        self.max_bytes = max_bytes
        self._seen: dict[str, _Stamp] = {}
        # Files whose processing failed for a reason outside the document
        # (a missing schema folder, a log that cannot append): retried only
        # when the file changes or the source restarts, to avoid a hot loop.
        self._failed: dict[str, _Stamp] = {}

    async def run(self, ingest: Ingest, reject: Reject, stop: asyncio.Event) -> None:
        """Poll the inbox and process complete files until `stop` is set."""
        for folder in (self.inbox, self.done_dir, self.rejected_dir):
            folder.mkdir(parents=True, exist_ok=True)
        logger.info(
            "Watching %s for source %r every %.3gs.",
            self.inbox,
            self.name,
            self.poll_interval,
        )

        while not stop.is_set():
            await self.poll(ingest, reject)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.poll_interval)
        logger.info("Stopped watching %s for source %r.", self.inbox, self.name)

    async def poll(self, ingest: Ingest, reject: Reject) -> int:
        """Scan the inbox once, process the files that are complete; return how many."""
        processed = 0
        for path in self._complete_files():
            try:
                await self._process(path, ingest, reject)
            except Exception:
                self._failed[path.name] = self._seen[path.name]
                logger.exception(
                    "Failed to process %s for source %r; the file stays in the "
                    "inbox and is retried when it changes or the source restarts.",
                    path.name,
                    self.name,
                )
                continue
            processed += 1
        return processed

    def _complete_files(self) -> list[Path]:
        stamps: dict[str, _Stamp] = {}
        for entry in os.scandir(self.inbox):
            if entry.name.startswith(".") or entry.name.endswith(_IGNORED_SUFFIXES):
                continue
            if not entry.is_file(follow_symlinks=False):
                continue
            info = entry.stat(follow_symlinks=False)
            stamps[entry.name] = _Stamp(info.st_size, info.st_mtime_ns)

        # A file counts as complete when it looks the same as in the last poll.
        ready = [
            name
            for name, stamp in stamps.items()
            if self._seen.get(name) == stamp and self._failed.get(name) != stamp
        ]
        self._seen = stamps
        ready.sort(key=lambda name: (stamps[name].mtime_ns, name))
        return [self.inbox / name for name in ready]

    async def _process(self, path: Path, ingest: Ingest, reject: Reject) -> None:
        stamp = self._seen[path.name]
        if stamp.size > self.max_bytes:
            message = (
                f"File {path.name!r} has {stamp.size} bytes, more than the "
                f"maximum of {self.max_bytes}; split it or raise `max_bytes`."
            )
            with path.open("rb") as handle:
                head = handle.read(self.max_bytes)
            await self._reject(path, head, message, [], reject, truncated=True)
            return

        # Only errors that name a fault in the document reject the file; any
        # other error leaves it in the inbox (see `poll`).
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            _moved_away(path, self.name)
            return
        try:
            parsed = await asyncio.to_thread(self.parser, data, path.name)
            if isinstance(parsed, ParsedFile):
                events, rejected = parsed.events, parsed.rejected
            else:
                events, rejected = parsed, []
            await ingest(events)
        except FormatError as exc:
            problems = [
                {"location": p.location, "line": p.line, "message": p.message}
                for p in exc.problems
            ]
            await self._reject(path, data, str(exc), problems, reject)
            return
        except EventError as exc:
            problems = [
                {"location": v.path, "value": v.value, "message": v.rule}
                for v in exc.violations
            ]
            await self._reject(path, data, str(exc), problems, reject)
            return

        # Like `_reject`, store the dead letters before the move. After a crash
        # in between, the file is read again: the log drops the repeated
        # events, but the rejected records are stored a second time.
        for record in rejected:
            await reject(
                DeadLetter(
                    stage="ingest",
                    error=record.message,
                    payload=record.payload,
                    source=self.name,
                    content_type=self.content_type,
                    details={**record.details, "file": path.name},
                )
            )
        target = _free_name(self.done_dir, path.name)
        try:
            path.replace(target)
        except FileNotFoundError:
            _moved_away(path, self.name)
            return
        logger.info(
            "Ingested %s for source %r: %d events, %d rejected records, moved to %s.",
            path.name,
            self.name,
            len(events),
            len(rejected),
            target,
        )

    async def _reject(
        self,
        path: Path,
        data: bytes,
        message: str,
        problems: list[dict[str, Any]],
        reject: Reject,
        *,
        truncated: bool = False,
    ) -> None:
        # Store the dead letter before moving the file: if the store fails,
        # the file stays in the inbox instead of vanishing into rejected/.
        await reject(
            DeadLetter(
                stage="ingest",
                error=message,
                payload=data,
                source=self.name,
                content_type=self.content_type,
                details={
                    "file": path.name,
                    "problems": problems,
                    "payload_truncated": truncated,
                },
            )
        )
        target = _free_name(self.rejected_dir, path.name)
        path.replace(target)
        logger.warning(
            "Rejected %s for source %r, moved to %s: %s",
            path.name,
            self.name,
            target,
            message,
        )


def _moved_away(path: Path, source: str) -> None:
    # Two workers may run a folder source for a moment while its lease moves.
    logger.warning(
        "File %s of source %r was moved away by another process while this one "
        "read it; the log drops events that both appended, by event id.",
        path.name,
        source,
    )


def _free_name(folder: Path, name: str) -> Path:
    """Return a path in `folder` for `name` that does not overwrite an older file."""
    target = folder / name
    stem, suffix = os.path.splitext(name)
    counter = 1
    while target.exists():
        target = folder / f"{stem}.{counter}{suffix}"
        counter += 1
    return target
