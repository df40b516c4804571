"""Redrive: send a pipeline's dead letters through the pipeline again on request.

An operator marks dead letters `redriving` (`plantbus dlq redrive` or the admin
API). Every running pipeline polls the state store for its own requests, runs
the stored event through its current steps and delivers it to the sink that
had failed, or to every target when a step had failed. The ledger entry of the
delivery is written before the dead letter is marked `redriven`, so a restart
between the two finds the entry and does not deliver a second time. A request
made while the hub is stopped waits in the state store for the next start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from plantbus.events.envelope import Event
from plantbus.pipeline.delivery import Abandoned, Deliverer
from plantbus.pipeline.parking import KeyParking, Process, ledger_entries, record_of
from plantbus.state.dead_letters import DeadLetter
from plantbus.state.store import StateStore

logger = logging.getLogger("plantbus.pipeline")


class Redriver:
    """Carry out the redrive requests of one pipeline."""

    def __init__(
        self,
        pipeline: str,
        state: StateStore,
        deliverer: Deliverer,
        ledger_sinks: list[str],
        partitions: int,
        process: Process,
        *,
        parking: KeyParking | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.state = state
        self.deliverer = deliverer
        self.ledger_sinks = ledger_sinks
        self.partitions = partitions
        self.process = process
        self.parking = parking
        # Set when several workers share the pipeline: only the holder of the
        # lease on a key's partition redrives the key's dead letters.
        self.owns_key: Callable[[str], bool] | None = None

    async def run_pending(self) -> int:
        """Redrive every requested dead letter of the pipeline and count them."""
        done = 0
        for letter in await self.state.pending_redrives(self.pipeline):
            if self.deliverer.stopping.is_set():
                break
            if self.owns_key is not None and not self.owns_key(
                Event.from_trusted(letter.payload).key
            ):
                continue
            try:
                outcome = await self.redrive(letter)
            except Abandoned:
                # The hub stops during a retry wait: the request stays pending
                # and the next start tries again.
                break
            assert letter.id is not None
            await self.state.finish_redrive(letter.id, outcome)
            logger.info(
                "dead letter %s redriven: %s",
                letter.id,
                outcome,
                extra={"event_id": letter.event_id, "dead_letter_id": letter.id},
            )
            done += 1
        return done

    async def redrive(self, letter: DeadLetter) -> str:
        """Send one dead letter's event through the pipeline; describe the outcome."""
        assert letter.event_id is not None and letter.id is not None
        if letter.sink is not None and letter.sink not in self.ledger_sinks:
            return (
                f"not sent: sink {letter.sink!r} is no longer a target of "
                f"pipeline {self.pipeline!r}"
            )

        event_id = letter.event_id
        already = await ledger_entries(self.state, self.ledger_sinks, event_id)
        if letter.sink is not None:
            if (letter.sink, event_id) in already:
                return f"not sent: the ledger already lists it at {letter.sink!r}"
            # The other targets had received the event the first time.
            already.update((s, event_id) for s in self.ledger_sinks if s != letter.sink)

        record = record_of(letter, self.partitions)
        key = record.event.key
        # The process callable writes the ledger before it returns, so the
        # dead letter is never `redriven` without its delivery in the ledger.
        again = await self.process(record, already)

        if again is None:
            return "sent through the pipeline"
        # The key stays parked, now behind the new dead letter.
        if self.parking is not None and self.parking.blockers.get(key) == letter.id:
            await self.parking.park(key, again)
        return f"failed again: see dead letter {again}"
