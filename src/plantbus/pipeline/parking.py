"""Key parking: hold back a partition key's events behind its dead letter.

When an event of a key becomes a dead letter, the key is parked: the
pipeline's later events of that key do not go to any target but are stored
as `parked` dead letters, in log order. Other keys keep flowing. When the
blocking dead letter is redriven with success or discarded, the pipeline
sends the parked events through its steps in log order and then lets the key
flow again. If one of them fails, it becomes the key's new blocker and the
rest stay parked behind it.

Parked keys live in the state store, so they survive a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from plantbus.backbone.log import Record, partition_for
from plantbus.pipeline.delivery import event_dead_letter
from plantbus.state.dead_letters import DeadLetter
from plantbus.state.store import DeadLetterFilter, StateStore

logger = logging.getLogger("plantbus.pipeline")

# Send one record through the pipeline's steps and targets; return the id of
# the dead letter it left, or None.
Process = Callable[[Record, set[tuple[str, str]]], Awaitable[int | None]]

# Parked letters read from the state store per query.
PAGE_SIZE = 10_000

# Dead-letter statuses in which a blocker keeps its key parked.
_HOLDING = ("open", "redriving")


class KeyParking:
    """The parked keys of one pipeline and the release of their held events."""

    def __init__(
        self,
        pipeline: str,
        state: StateStore,
        partitions: int,
        ledger_sinks: list[str],
    ) -> None:
        self.pipeline = pipeline
        self.state = state
        self.partitions = partitions
        self.ledger_sinks = ledger_sinks
        # Parked key -> id of the dead letter it waits on.
        self.blockers: dict[str, int] = {}
        # Held while a key is parked, unparked, or an event is held back, so a
        # release never misses an event that a lane is parking at that moment.
        self.lock = asyncio.Lock()

    async def load(self) -> None:
        """Read the parked keys from the state store."""
        self.blockers = await self.state.parked_keys(self.pipeline)
        if self.blockers:
            logger.info(
                "pipeline %s has %d parked keys", self.pipeline, len(self.blockers)
            )

    async def hold_if_parked(self, record: Record) -> bool:
        """Store the record as a parked event if its key is parked and return True."""
        key = record.event.key
        if key not in self.blockers:
            return False
        async with self.lock:
            blocker = self.blockers.get(key)
            if blocker is None:
                return False
            error = (
                f"Held back: dead letter {blocker} of the same partition "
                f"key {key!r} is not resolved yet. Redrive or discard it "
                f"and this event follows in log order."
            )
            await self.state.add_parked_event(
                event_dead_letter(
                    record,
                    record.event,
                    self.pipeline,
                    "parked",
                    error,
                    details={"partitionkey": key, "blocked_by": blocker},
                )
            )
        return True

    async def park(self, key: str, letter_id: int) -> None:
        """Park a key behind a dead letter, or move it behind a newer one."""
        async with self.lock:
            self.blockers[key] = letter_id
            await self.state.park_key(self.pipeline, key, letter_id)
        logger.info(
            "pipeline %s parked key %r behind dead letter %d",
            self.pipeline,
            key,
            letter_id,
        )

    async def release_resolved(self, process: Process) -> int:
        """Release every key whose blocker is redriven or discarded; count them."""
        if not self.blockers:
            return 0
        letters = await self.state.dead_letters(
            DeadLetterFilter(ids=list(self.blockers.values()), status=None),
            limit=len(self.blockers),
        )
        holding = {
            letter.id for letter in letters if letter.details.get("status") in _HOLDING
        }
        released = 0
        for key, blocker in list(self.blockers.items()):
            if blocker in holding or self.blockers.get(key) != blocker:
                continue
            await self.release(key, process)
            released += 1
        return released

    async def release(self, key: str, process: Process) -> None:
        """Send a key's parked events through the pipeline in log order, then unpark.

        Stop at the first event that fails again. That event's dead letter
        becomes the key's new blocker and the rest stay parked.
        """
        sent = 0
        while True:
            async with self.lock:
                held = await self._held(key)
                if not held:
                    self.blockers.pop(key, None)
                    await self.state.unpark_key(self.pipeline, key)
                    logger.info(
                        "pipeline %s released key %r after %d held events",
                        self.pipeline,
                        key,
                        sent,
                    )
                    return
            for letter in held:
                assert letter.id is not None
                if not await self.state.claim_dead_letter(
                    letter.id, "parked", "redriving"
                ):
                    continue
                failed = await self._send(letter, process)
                if failed is not None:
                    await self.park(key, failed)
                    await self.state.finish_redrive(
                        letter.id, f"failed again: see dead letter {failed}"
                    )
                    return
                await self.state.finish_redrive(
                    letter.id, "released in log order after its key's blocker"
                )
                sent += 1

    async def _held(self, key: str) -> list[DeadLetter]:
        # The store cannot filter by partition key, so the pipeline's parked
        # letters are read page by page and filtered here.
        held: list[DeadLetter] = []
        after_id = None
        while True:
            page = await self.state.dead_letters(
                DeadLetterFilter(
                    pipeline=self.pipeline, status="parked", after_id=after_id
                ),
                limit=PAGE_SIZE,
            )
            held += [
                letter for letter in page if letter.details.get("partitionkey") == key
            ]
            if len(page) < PAGE_SIZE:
                break
            after_id = page[-1].id
        return sorted(held, key=lambda letter: (letter.offset or 0, letter.id or 0))

    async def _send(self, letter: DeadLetter, process: Process) -> int | None:
        assert letter.event_id is not None
        already = await ledger_entries(self.state, self.ledger_sinks, letter.event_id)
        return await process(record_of(letter, self.partitions), already)


async def ledger_entries(
    state: StateStore, sinks: list[str], event_id: str
) -> set[tuple[str, str]]:
    """Return the (sink, event id) pairs of the sinks whose ledger lists the event."""
    already: set[tuple[str, str]] = set()
    for sink in sinks:
        if event_id in await state.delivered(sink, [event_id]):
            already.add((sink, event_id))
    return already


def record_of(letter: DeadLetter, partitions: int) -> Record:
    """Rebuild the log record of a dead letter's event, with its partition."""
    record = Record(letter.offset or 0, 0, letter.payload, time.time())
    record.partition = partition_for(record.event.key, partitions)
    return record
