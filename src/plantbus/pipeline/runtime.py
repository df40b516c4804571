"""Run one pipeline: read its consumer group, keep order per key, commit offsets.

Records are read from the log in offset order and queued per partition key.
Each key has at most one record in work, so the events of a key reach the
sinks in log order, also across retries. Up to `concurrency` keys run at the
same time. A partition's committed offset never passes a record that is still
in work, so a crash or stop delivers the unfinished records again on restart
and the idempotency ledger skips the ones that had already arrived.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from typing import Any

from plantbus.backbone.log import EventLog, Record
from plantbus.errors import BackboneError, PlantbusError, RetryableDeliveryError
from plantbus.observability.metrics import CONSUMER_LAG, DEAD_LETTERS, STEP_FAILURES
from plantbus.pipeline.delivery import (
    Abandoned,
    Deliverer,
    backoff_seconds,
    event_dead_letter,
)
from plantbus.pipeline.leases import LeaseFollower, Leases
from plantbus.pipeline.parking import KeyParking
from plantbus.pipeline.redrive import Redriver
from plantbus.pipeline.steps import RouteStep, Step, TypeMatcher, WorkItem
from plantbus.state.dead_letters import Attempt
from plantbus.state.store import ReplayRequest, StateStore

logger = logging.getLogger("plantbus.pipeline")

# Seconds past its delay that a retry waits for its record to come back.
_RETURN_GRACE_SECONDS = 2.0


class OffsetTracker:
    """Track records in work per partition and compute the offsets safe to commit."""

    def __init__(self, positions: dict[int, int]) -> None:
        # Highest offset read per partition.
        self.read = dict(positions)
        # Offsets in work per partition, in read order, which is offset order.
        self.pending: dict[int, dict[int, None]] = {p: {} for p in positions}

    def reset(self, positions: dict[int, int]) -> None:
        """Start again from new positions; only call with no record in work."""
        self.read = dict(positions)
        self.pending = {p: {} for p in positions}

    def add(self, record: Record) -> None:
        self.pending[record.partition][record.offset] = None
        self.read[record.partition] = record.offset

    def done(self, record: Record) -> None:
        del self.pending[record.partition][record.offset]

    def committable(self) -> dict[int, int]:
        """Return, per partition, the last offset before the oldest one in work."""
        offsets = {}
        for partition, pending in self.pending.items():
            if pending:
                offsets[partition] = next(iter(pending)) - 1
            else:
                offsets[partition] = self.read[partition]
        return offsets

    @property
    def in_work(self) -> int:
        return sum(len(pending) for pending in self.pending.values())


class PipelineRuntime:
    """One pipeline's consumer: steps, per-key ordering, delivery and commits."""

    def __init__(
        self,
        name: str,
        log: EventLog,
        state: StateStore,
        types: Sequence[str],
        steps: Sequence[Step],
        deliverer: Deliverer,
        *,
        max_in_flight: int = 1000,
        concurrency: int = 64,
        commit_interval: float = 0.2,
        lag_interval: float = 1.0,
        read_batch: int = 500,
        park_keys: bool = True,
        leases: Leases | None = None,
    ) -> None:
        self.name = name
        self.group = name
        self.log = log
        self.state = state
        self.accepts = TypeMatcher(list(types))
        self.steps = list(steps)
        self._steps = [
            (step, inspect.iscoroutinefunction(step.run)) for step in self.steps
        ]
        self.deliverer = deliverer
        self.max_in_flight = max_in_flight
        self.concurrency = concurrency
        self.commit_interval = commit_interval
        # Seconds between updates of the lag gauge while records flow. Counting
        # the lag costs the JetStream log a consumer per partition behind.
        self.lag_interval = lag_interval
        self._lag_updated_at = -float("inf")
        self.read_batch = read_batch
        self.stopping = deliverer.stopping
        self.processed = 0
        self._lanes: dict[str, deque[tuple[Record, set[tuple[str, str]]]]] = {}
        # Keys whose lane has records and no worker yet; None stops a worker.
        self._ready: asyncio.Queue[str | None] = asyncio.Queue()
        self._room = asyncio.Event()
        self._failure: BaseException | None = None
        routed = {
            sink
            for step in steps
            if isinstance(step, RouteStep)
            for sink in step.sink_names
        }
        self._ledger_sinks = sorted(set(deliverer.default_targets) | routed)
        self.parking = (
            KeyParking(name, state, log.partitions, self._ledger_sinks)
            if park_keys
            else None
        )
        self.redriver = Redriver(
            name,
            state,
            deliverer,
            self._ledger_sinks,
            log.partitions,
            self._process_now,
            parking=self.parking,
        )
        # Set when several workers share the consumer group: this one reads
        # only the partitions it holds a lease on.
        self.leases = (
            LeaseFollower(name, self.group, log, leases) if leases is not None else None
        )
        if self.leases is not None:
            self.redriver.owns_key = self.leases.owns_key
        # Records handed back to the log before a retry, by (partition,
        # offset), until they come back; set when one is due.
        # Each entry is the future that the record's return resolves and the
        # loop time when it is due.
        self._returning: dict[tuple[int, int], tuple[asyncio.Future[None], float]] = {}
        self._return_due = asyncio.Event()
        deliverer.hold = self._hold_for_retry

    async def run(self) -> None:
        """Consume until `stopping` is set, then finish work in hand and commit."""
        positions = await self.log.committed(self.group)
        if self.leases is not None:
            # Partitions join one by one as their leases are taken.
            positions = {}
        tracker = OffsetTracker(positions)
        await self._load_parked_keys()
        if self.leases is None:
            logger.info("pipeline %s started at %s", self.name, _summary(positions))
        else:
            logger.info(
                "pipeline %s started; it reads each partition from its committed "
                "offset once this worker holds its lease",
                self.name,
            )
        last_commit = time.monotonic()
        committed = dict(positions)
        # A fixed pool of workers takes keys from the ready queue; that costs
        # less per event than a task per key.
        workers = [
            asyncio.create_task(self._work(tracker)) for _ in range(self.concurrency)
        ]
        redrives = asyncio.create_task(self._redrive_periodically())
        # Replay requests are applied before the first read, then once per
        # commit interval.
        last_replay_check = -float("inf")
        try:
            while not self.stopping.is_set() and self._failure is None:
                if time.monotonic() - last_replay_check >= self.commit_interval:
                    await self._apply_replays(tracker, committed)
                    last_replay_check = time.monotonic()
                if self.leases is not None:
                    changed = await self.leases.follow(
                        tracker, committed, lambda: self._commit(tracker, committed)
                    )
                    if changed:
                        await self._load_parked_keys()
                room = self.max_in_flight - tracker.in_work
                returns_due = self._returns_due()
                if room <= 0 and not returns_due:
                    self._room.clear()
                    await self._wait_or_stop(
                        _first(self._room.wait(), self._return_due.wait()), 0.5
                    )
                else:
                    positions = (
                        tracker.read
                        if self.leases is None
                        else self.leases.positions(tracker)
                    )
                    # With no room, the read only brings back records that
                    # were handed back for a retry.
                    records = await self.log.consume(
                        self.group, positions, min(max(room, 0), self.read_batch)
                    )
                    if records:
                        await self._dispatch(records, tracker)
                    elif room > 0:
                        await self._commit(tracker, committed, idle=True)
                        last_commit = time.monotonic()
                        await self._wait_or_stop(
                            self._wait_for_records(), 0.05 if returns_due else 0.5
                        )
                        continue
                    else:
                        # Due but not back yet: the log sends it shortly.
                        await self._wait_or_stop(self._room.wait(), 0.05)
                if time.monotonic() - last_commit >= self.commit_interval:
                    await self._commit(tracker, committed)
                    last_commit = time.monotonic()
        finally:
            # Workers finish the record in hand; the rest is read again next start.
            self.stopping.set()
            for _ in workers:
                self._ready.put_nowait(None)
            await asyncio.gather(*workers, redrives, return_exceptions=True)
            await self._commit(tracker, committed)
            if self.leases is not None and self.leases.lost:
                logger.warning(
                    "pipeline %s stopped without committing, because its "
                    "partition leases were lost",
                    self.name,
                )
            else:
                logger.info(
                    "pipeline %s stopped; committed up to %s",
                    self.name,
                    _summary(committed),
                )
        if self._failure is not None:
            raise self._failure

    async def _load_parked_keys(self) -> None:
        if self.parking is None:
            return
        await self.parking.load()
        if self.leases is not None:
            self.leases.prune(self.parking.blockers)

    async def _redrive_periodically(self) -> None:
        # A redriven event is delivered beside its key's lane. With key parking
        # on, the key's newer events are parked meanwhile. With it off, the
        # redriven event can overtake or trail them.
        while not self.stopping.is_set():
            try:
                await self.redriver.run_pending()
                if self.parking is not None:
                    await self.parking.release_resolved(self._process_now)
            except Abandoned:
                return
            except Exception as exc:
                _log_stop(self.name, exc)
                self._failure = exc
                self.stopping.set()
                return
            await self._wait_or_stop(self.stopping.wait(), self.commit_interval)

    async def _apply_replays(
        self, tracker: OffsetTracker, committed: dict[int, int]
    ) -> None:
        requests = await self.state.pending_replays(self.name)
        if self.leases is not None and not await self.leases.ready_for_replay(
            bool(requests)
        ):
            return
        if not requests:
            return

        # Moving the group while records are in work would let their offsets
        # be committed over the new position, so the lanes drain first.
        while tracker.in_work and not self.stopping.is_set():
            self._room.clear()
            await self._wait_or_stop(self._room.wait(), 0.5)
        if tracker.in_work:
            return
        await self._commit(tracker, committed)

        positions = dict(committed)
        for request in requests:
            positions = await self._replay(request)
        tracker.reset(positions)
        committed.clear()
        committed.update(positions)

    async def _replay(self, request: ReplayRequest) -> dict[int, int]:
        moment = None
        if request.from_time is not None:
            moment = datetime.fromtimestamp(request.from_time, UTC)
        positions = await self.log.seek(
            self.group, offset=request.from_offset, time=moment
        )
        forgotten = 0
        if request.force:
            ids = await self._event_ids_after(positions)
            for sink in self._ledger_sinks:
                forgotten += await self.state.forget_deliveries(sink, ids)
        assert request.id is not None
        await self.state.finish_replay(request.id, positions)
        logger.info(
            "pipeline %s replays from offset %d; %d ledger entries removed",
            self.name,
            min(positions.values()) + 1,
            forgotten,
        )
        return positions

    async def _event_ids_after(self, positions: dict[int, int]) -> list[str]:
        """Return the ids of the pipeline's events from positions to the log's end."""
        end = await self.log.end_offset()
        cursor = dict(positions)
        ids: list[str] = []
        while records := await self.log.read(cursor, self.read_batch):
            for record in records:
                cursor[record.partition] = max(cursor[record.partition], record.offset)
                if record.offset <= end and self.accepts(record.event.type):
                    ids.append(record.event.id)
            # Events appended after the request are not in the ledger yet.
            if min(record.offset for record in records) > end:
                break
        return ids

    async def _wait_or_stop(self, awaitable: Awaitable[Any], timeout: float) -> None:
        await _first(awaitable, self.stopping.wait(), timeout=timeout)

    async def _wait_for_records(self) -> None:
        """Wait for an append, or for a record handed back to be due again."""
        await _first(self.log.wait_for_append(0.5), self._return_due.wait())
        self._return_due.clear()

    def _returns_due(self) -> bool:
        now = asyncio.get_running_loop().time()
        return any(due <= now for _, due in self._returning.values())

    async def _hold_for_retry(self, record: Record, seconds: float) -> None:
        """Wait before a retry by handing the record back to the log for a while.

        The log keeps it (on JetStream, a negative acknowledgement with a
        delay) and the group consumes it again once it is due. The key's lane
        waits meanwhile, so the key's later events stay behind it, and the
        record stays uncommitted. If it is not back shortly after the delay,
        as when its consumer was replaced meanwhile, the retry goes ahead.
        """
        loop = asyncio.get_running_loop()
        key = (record.partition, record.offset)
        back: asyncio.Future[None] = loop.create_future()
        self._returning[key] = (back, loop.time() + seconds)
        wake = loop.call_later(seconds, self._return_due.set)
        try:
            if not await self.log.nak(self.group, record, seconds):
                await self.deliverer.sleep(seconds)
                return
            await self._wait_or_stop(back, seconds + _RETURN_GRACE_SECONDS)
        finally:
            wake.cancel()
            self._returning.pop(key, None)
        if self.stopping.is_set():
            raise Abandoned()

    async def _dispatch(self, records: list[Record], tracker: OffsetTracker) -> None:
        accepted: list[Record] = []
        for record in records:
            returning = self._returning.get((record.partition, record.offset))
            if returning is not None or record.offset <= tracker.read.get(
                record.partition, -1
            ):
                # A record handed back for a retry: the lane waiting for it
                # goes on. One that comes after its retry went ahead is dropped.
                if returning is not None and not returning[0].done():
                    returning[0].set_result(None)
                continue
            tracker.add(record)
            event_type = record.event.type
            if self.accepts(event_type):
                accepted.append(record)
            else:
                tracker.done(record)

        # One ledger query per batch instead of one per event.
        already: set[tuple[str, str]] = set()
        ids = [record.event.id for record in accepted]
        for sink in self._ledger_sinks:
            found = await self.state.delivered(sink, ids)
            already.update((sink, event_id) for event_id in found)

        for record in accepted:
            key = record.event.key
            lane = self._lanes.get(key)
            if lane is None:
                self._lanes[key] = deque([(record, already)])
                self._ready.put_nowait(key)
            else:
                lane.append((record, already))

    async def _work(self, tracker: OffsetTracker) -> None:
        """Take keys from the ready queue and work their lanes in order until empty."""
        while (key := await self._ready.get()) is not None:
            lane = self._lanes[key]
            try:
                while lane and not self.stopping.is_set():
                    record, already = lane[0]
                    await self._handle(record, already)
                    lane.popleft()
                    tracker.done(record)
                    self.processed += 1
                    self._room.set()
            except Abandoned:
                continue
            except BaseException as exc:
                # A failure of plantbus itself, such as the state store being
                # unavailable: stop instead of skipping the record.
                _log_stop(self.name, exc)
                self._failure = exc
                self.stopping.set()
                return
            if not lane:
                del self._lanes[key]

    async def _handle(self, record: Record, already: set[tuple[str, str]]) -> None:
        parking = self.parking
        if parking is None:
            await self._process(record, already)
            return
        if parking.blockers and await parking.hold_if_parked(record):
            return
        letter = await self._process(record, already)
        if letter is not None:
            await parking.park(record.event.key, letter)

    async def _process_now(
        self, record: Record, already: set[tuple[str, str]]
    ) -> int | None:
        """Process a redriven or released record and write its ledger entries now.

        The caller marks the dead letter done next, so the ledger must already
        contain the delivery then, or a restart would deliver it twice.
        The state store runs its statements in order, so a commit that took
        the list of deliveries first has written it before this one returns.
        """
        letter = await self._process(record, already)
        recorded, self.deliverer.unrecorded = self.deliverer.unrecorded, []
        await self.state.record_deliveries(recorded)
        return letter

    async def _process(
        self, record: Record, already: set[tuple[str, str]]
    ) -> int | None:
        """Run a record through the steps and deliver it; return a dead letter id."""
        item = WorkItem(record.event)
        for step, is_async in self._steps:
            attempts: list[Attempt] = []
            while True:
                try:
                    if is_async:
                        result = await step.run(item)  # type: ignore[misc]
                    else:
                        result = step.run(item)
                    break
                except RetryableDeliveryError as exc:
                    # Another system failed for a while (an enrich look-up timed
                    # out): wait and try again, as a delivery would.
                    attempts.append(Attempt(time.time(), str(exc)))
                    policy = self.deliverer.policy
                    if len(attempts) >= policy.max_attempts:
                        return await self._step_failed(step.name, record, exc, attempts)
                    await self.deliverer.wait(
                        backoff_seconds(policy, len(attempts), exc.retry_after),
                        record,
                    )
                except Exception as exc:
                    # A poison event must not stop the pipeline: it becomes a
                    # dead letter and the events after it go on.
                    attempts.append(Attempt(time.time(), str(exc)))
                    return await self._step_failed(step.name, record, exc, attempts)
            if not result:
                return None
        return await self.deliverer.deliver(item, record, already)

    async def _step_failed(
        self, step: str, record: Record, exc: Exception, attempts: list[Attempt]
    ) -> int:
        STEP_FAILURES.labels(self.name, step).inc()
        DEAD_LETTERS.labels(step).inc()
        event = record.event
        logger.warning(
            "step %s failed: %s",
            step,
            exc,
            extra={"event_id": event.id, "correlation_id": event.correlationid},
        )
        return await self.state.add_dead_letter(
            event_dead_letter(
                record, event, self.name, step, str(exc), attempts=attempts
            )
        )

    async def _commit(
        self, tracker: OffsetTracker, committed: dict[int, int], *, idle: bool = False
    ) -> None:
        offsets = tracker.committable()
        changed = {p: o for p, o in offsets.items() if committed.get(p) != o}
        # The ledger must contain every delivery below an offset before that
        # offset is committed, or a replay could not tell what had arrived.
        recorded, self.deliverer.unrecorded = self.deliverer.unrecorded, []
        await self.state.record_deliveries(recorded)
        if changed and self.leases is not None and self.leases.lost:
            # Another worker may hold these partitions already, and a commit
            # could move its offsets back. The ledger entries above still
            # went in, so that worker skips what this one delivered.
            changed = {}
        if changed:
            await self.log.commit(self.group, changed)
            committed.update(changed)
        now = time.monotonic()
        if idle or now - self._lag_updated_at >= self.lag_interval:
            self._lag_updated_at = now
            try:
                lag = await self.log.lag(self.group)
            except BackboneError as exc:
                # The gauge keeps its last value; delivery goes on.
                logger.warning(
                    "pipeline %s could not count its lag: %s", self.name, exc
                )
                return
            CONSUMER_LAG.labels(self.name).set(lag)


async def _first(*awaitables: Awaitable[Any], timeout: float | None = None) -> None:
    """Wait until the first of `awaitables` finishes or `timeout` passes.

    The others are cancelled.
    """
    tasks = [asyncio.ensure_future(awaitable) for awaitable in awaitables]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def _log_stop(pipeline: str, exc: BaseException) -> None:
    # A plantbus error names its cause and the fix; a traceback only helps
    # with a bug.
    if isinstance(exc, PlantbusError):
        logger.error("pipeline %s stopped: %s", pipeline, exc)
    else:
        logger.error("pipeline %s stopped on an internal error", pipeline, exc_info=exc)


def _summary(positions: dict[int, int]) -> str:
    if not positions:
        return "no offsets, because this worker held no partition"
    busy = {p: o for p, o in positions.items() if o}
    return f"offsets {busy}" if busy else "the start of the log"
