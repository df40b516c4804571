"""Operator actions on dead letters and consumer groups, shared by CLI and API.

Every action works on the state store alone, so it runs beside a live hub (the
SQLite files are in WAL mode) or while the hub is stopped:

- Redriving a pipeline's dead letter marks it `redriving`. The pipeline polls
  for such letters and sends them through its steps again, as
  `plantbus.pipeline.redrive` describes. While the hub is stopped they wait
  for the next start.
- Redriving an ingest dead letter of a folder source writes its original bytes
  back into that source's inbox, where the source reads them again.
- A replay is stored as a request that the pipeline applies between two reads,
  because a running pipeline would commit its own offsets over a seek made
  from another process.

Every redrive, discard and replay appends a record to the audit log.
"""

from __future__ import annotations

import dataclasses
import getpass
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plantbus.config.model import FolderSourceConfig, HubConfig
from plantbus.errors import PlantbusError
from plantbus.state.dead_letters import DeadLetter
from plantbus.state.store import (
    AuditRecord,
    DeadLetterFilter,
    ReplayRequest,
    StateStore,
)

logger = logging.getLogger("plantbus.admin")

# Maximum number of dead letters that one redrive or discard changes; narrow
# the filter or repeat the command for more.
MAX_LETTERS_PER_ACTION = 10_000


def default_actor() -> str:
    """Return the name of the operating system user, else 'unknown'."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@dataclass(slots=True)
class ActionResult:
    """Outcome of a redrive or discard, per dead letter id."""

    done: list[int] = field(default_factory=list)
    # Dead letter id (None when a requested id matched nothing) and the reason.
    rejected: list[tuple[int | None, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the result as JSON-ready data."""
        return {
            "done": self.done,
            "rejected": [{"id": i, "reason": reason} for i, reason in self.rejected],
        }


class AdminService:
    """List, show, redrive and discard dead letters, and request replays."""

    def __init__(self, state: StateStore, config: HubConfig) -> None:
        self.state = state
        self.config = config

    async def dead_letters(
        self, where: DeadLetterFilter, *, limit: int = 1000
    ) -> list[DeadLetter]:
        """Return the dead letters that match a filter, oldest first."""
        return await self.state.dead_letters(where, limit=limit)

    async def dead_letter(self, letter_id: int) -> DeadLetter | None:
        """Return one dead letter in any status, or None when the id is unknown."""
        if not 1 <= letter_id < 2**63:
            return None
        found = await self.state.dead_letters(
            DeadLetterFilter(ids=[letter_id], status=None), limit=1
        )
        return found[0] if found else None

    async def redrive(self, where: DeadLetterFilter, *, actor: str) -> ActionResult:
        """Redrive the open dead letters that match a filter; audit the action."""
        result = ActionResult()
        for letter in await self._select(where, result):
            assert letter.id is not None
            reason = await self._redrive_one(letter)
            if reason is None:
                result.done.append(letter.id)
            else:
                result.rejected.append((letter.id, reason))
        await self._audit(actor, "dead_letter.redrive", where, result, reason=None)
        return result

    async def discard(
        self, where: DeadLetterFilter, *, actor: str, reason: str
    ) -> ActionResult:
        """Mark the open dead letters that match a filter as discarded; audit it."""
        if not reason.strip():
            raise PlantbusError(
                "Discarding dead letters needs a reason: pass a short text such as "
                "'work order closed by hand in the ERP'."
            )
        result = ActionResult()
        for letter in await self._select(where, result):
            assert letter.id is not None
            if await self.state.claim_dead_letter(letter.id, "open", "discarded"):
                result.done.append(letter.id)
            else:
                result.rejected.append((letter.id, _TAKEN.format(letter.id)))
        await self._audit(actor, "dead_letter.discard", where, result, reason=reason)
        return result

    async def replay(
        self,
        pipeline: str,
        *,
        from_offset: int | None = None,
        from_time: float | None = None,
        force: bool = False,
        actor: str,
    ) -> int:
        """Request that a pipeline re-reads the log from an offset or a time."""
        names = [p.name for p in self.config.pipelines]
        if pipeline not in names:
            raise PlantbusError(
                f"Pipeline {pipeline!r} is not in the hub file; expected one of "
                f"{', '.join(map(repr, names)) or 'no pipelines'}."
            )
        if (from_offset is None) == (from_time is None):
            raise PlantbusError(
                f"A replay of pipeline {pipeline!r} needs exactly one start: a "
                f"from-offset or a from-time, not {from_offset!r} and {from_time!r}."
            )
        if from_offset is not None and from_offset < 1:
            raise PlantbusError(
                f"From-offset {from_offset!r} is invalid: offsets start at 1."
            )

        request_id = await self.state.request_replay(
            ReplayRequest(pipeline, from_offset, from_time, force, time.time())
        )
        await self.state.add_audit(
            AuditRecord(
                at=time.time(),
                actor=actor,
                action="pipeline.replay",
                target=f"pipeline {pipeline}",
                details={
                    "request_id": request_id,
                    "from_offset": from_offset,
                    "from_time": from_time,
                    "force": force,
                },
            )
        )
        logger.info(
            "replay %s of pipeline %s requested by %s", request_id, pipeline, actor
        )
        return request_id

    async def audit_log(self, *, limit: int = 1000) -> list[AuditRecord]:
        """Return the newest audit records, oldest first."""
        return await self.state.audit_log(limit=limit)

    async def _select(
        self, where: DeadLetterFilter, result: ActionResult
    ) -> list[DeadLetter]:
        where = _without_blank_filters(where)
        if where.ids is None and _is_unbounded(where):
            raise PlantbusError(
                "A redrive or discard without ids needs at least one non-empty "
                "filter (event type, pipeline, sink, error text, since or until), "
                "so that it cannot touch every dead letter by accident."
            )
        if where.ids is not None:
            _check_ids(where.ids)
        # Only open letters can be redriven or discarded.
        selected = dataclasses.replace(where, status="open")
        letters = await self.state.dead_letters(selected, limit=MAX_LETTERS_PER_ACTION)
        if where.ids is not None:
            found = {letter.id for letter in letters}
            missing = sorted(set(where.ids) - found)
            # One query for all of them: the status of those that exist.
            known = (
                {
                    letter.id: letter.details.get("status")
                    for letter in await self.state.dead_letters(
                        DeadLetterFilter(ids=missing, status=None), limit=len(missing)
                    )
                }
                if missing
                else {}
            )
            for letter_id in missing:
                status = known.get(letter_id)
                reason = (
                    f"no dead letter has id {letter_id}"
                    if status is None
                    else f"dead letter {letter_id} is {status}, not open"
                )
                result.rejected.append((letter_id, reason))
        return letters

    async def _redrive_one(self, letter: DeadLetter) -> str | None:
        assert letter.id is not None
        if letter.stage == "ingest":
            return await self._redrive_ingest(letter)

        pipelines = {p.name for p in self.config.pipelines}
        if letter.pipeline not in pipelines or letter.event_id is None:
            return (
                f"dead letter {letter.id} comes from pipeline {letter.pipeline!r}, "
                f"which is not in the hub file; discard it instead"
            )
        if not await self.state.claim_dead_letter(letter.id, "open", "redriving"):
            return _TAKEN.format(letter.id)
        return None

    async def _redrive_ingest(self, letter: DeadLetter) -> str | None:
        assert letter.id is not None
        source = next(
            (
                s
                for s in self.config.sources
                if isinstance(s, FolderSourceConfig) and s.name == letter.source
            ),
            None,
        )
        if source is None:
            return (
                f"dead letter {letter.id} was rejected by source {letter.source!r}, "
                f"which is not a folder source of the hub file; only folder "
                f"sources can read input again, so send it to its source anew"
            )
        if letter.details.get("payload_truncated"):
            return (
                f"dead letter {letter.id} holds only the start of the input file, "
                f"so writing it back would not give the original; fetch the file "
                f"from the source's rejected folder instead"
            )

        if not source.path.is_dir():
            return (
                f"dead letter {letter.id}: the inbox {str(source.path)!r} of source "
                f"{source.name!r} does not exist; check that the hub file's paths "
                f"and variables are the running hub's"
            )
        if not await self.state.claim_dead_letter(letter.id, "open", "redriving"):
            return _TAKEN.format(letter.id)
        name = str(letter.details.get("file") or f"dead-letter-{letter.id}")
        target = _write_into_inbox(source.path, Path(name).name, letter.payload)
        await self.state.finish_redrive(
            letter.id, f"written into the inbox of {source.name!r} as {target.name}"
        )
        logger.info(
            "dead letter %s written back into %s",
            letter.id,
            target,
            extra={"dead_letter_id": letter.id},
        )
        return None

    async def _audit(
        self,
        actor: str,
        action: str,
        where: DeadLetterFilter,
        result: ActionResult,
        *,
        reason: str | None,
    ) -> None:
        filters = {
            name: value
            for name, value in dataclasses.asdict(where).items()
            if value is not None and name not in ("ids", "status")
        }
        rejected = result.to_dict()["rejected"]
        details: dict[str, Any] = {
            "ids": result.done,
            "filter": filters,
            # A long list of unknown ids would bloat every audit read.
            "rejected": rejected[:100],
            "rejected_count": len(rejected),
        }
        if reason is not None:
            details["reason"] = reason
        target = "dead letters " + (",".join(map(str, result.done)) or "none")
        await self.state.add_audit(
            AuditRecord(time.time(), actor, action, target, details)
        )
        logger.info(
            "%s by %s: %d done, %d rejected",
            action,
            actor,
            len(result.done),
            len(result.rejected),
        )


# Most ids one redrive or discard takes; larger selections use filters.
MAX_IDS = 1000
_TAKEN = "dead letter {} was redriven or discarded by another request meanwhile"


def _check_ids(ids: list[int]) -> None:
    if len(ids) > MAX_IDS:
        raise PlantbusError(
            f"{len(ids)} ids were given; at most {MAX_IDS} are taken at once. Use "
            f"filters for larger selections, or split the list."
        )
    for letter_id in ids:
        if not 1 <= letter_id < 2**63:
            raise PlantbusError(
                f"Dead letter id {letter_id} is out of range: ids are whole "
                f"numbers from 1 to {2**63 - 1}."
            )


def _without_blank_filters(where: DeadLetterFilter) -> DeadLetterFilter:
    """Treat empty text filters as absent: `--error ''` must not match everything."""
    blank = {
        name: None
        for name in ("event_type", "event_id", "pipeline", "sink", "error_contains")
        if isinstance(getattr(where, name), str) and not getattr(where, name).strip()
    }
    return dataclasses.replace(where, **blank) if blank else where


def _is_unbounded(where: DeadLetterFilter) -> bool:
    return all(
        value is None
        for value in (
            where.event_type,
            where.event_id,
            where.pipeline,
            where.sink,
            where.error_contains,
            where.since,
            where.until,
        )
    )


def _write_into_inbox(inbox: Path, name: str, payload: bytes) -> Path:
    """Write a file under a free name; the '.' prefix hides it until complete."""
    inbox.mkdir(parents=True, exist_ok=True)
    stem, suffix = os.path.splitext(name)
    target = inbox / name
    counter = 1
    while target.exists():
        target = inbox / f"{stem}.redrive{counter}{suffix}"
        counter += 1
    partial = inbox / f".{target.name}.redrive"
    partial.write_bytes(payload)
    partial.replace(target)
    return target
