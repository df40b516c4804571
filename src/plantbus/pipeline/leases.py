"""Make a pipeline read only the partitions whose lease this worker holds.

With several worker processes (see `plantbus.state.leases`), the runtime calls
`LeaseFollower.follow` before each read. A partition whose lease was just taken
joins at the consumer group's committed offset. A partition marked for release
is no longer read. Once none of its records is in work, its offset is committed
and the lease is handed back, so the next owner starts exactly after it.

A replay request moves every partition of the group, so the runtime calls
`ready_for_replay` first: one worker takes the group's replay lock and
collects every partition, the others hand theirs back, and the request is
applied only once the one worker holds them all. No other worker then has a
read position in memory that it could commit over the moved offsets.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from plantbus.backbone.log import EventLog, partition_for

logger = logging.getLogger("plantbus.pipeline")

Commit = Callable[[], Awaitable[None]]


class Leases(Protocol):
    """The partitions of one consumer group that this worker holds."""

    @property
    def failure(self) -> BaseException | None: ...

    @property
    def owned(self) -> set[int]: ...

    def readable(self) -> frozenset[int]: ...

    def to_release(self) -> frozenset[int]: ...

    async def release(self, partitions: list[int]) -> None: ...

    async def claim_replay(self) -> bool: ...

    def holds_all(self) -> bool: ...

    async def end_replay(self) -> None: ...


class Tracked(Protocol):
    """The part of the runtime's offset tracker that leases change."""

    read: dict[int, int]
    pending: dict[int, dict[int, None]]


class LeaseFollower:
    """Add and remove a pipeline's partitions as its leases come and go."""

    def __init__(self, pipeline: str, group: str, log: EventLog, leases: Leases):
        self.pipeline = pipeline
        self.group = group
        self.log = log
        self.leases = leases
        # Set while this worker holds the replay lock and collects partitions.
        self._collecting = False

    @property
    def lost(self) -> bool:
        """Return whether the lease session ended, so other workers may read on."""
        return self.leases.failure is not None

    def owns_key(self, key: str) -> bool:
        """Return whether this worker holds the lease of a key's partition."""
        return partition_for(key, self.log.partitions) in self.leases.owned

    def prune(self, blockers: dict[str, int]) -> None:
        """Drop the parked keys of partitions that other workers hold.

        Only the lease holder may release a parked key, so that its parked
        events go out once and in log order.
        """
        for key in [k for k in blockers if not self.owns_key(k)]:
            del blockers[key]

    async def ready_for_replay(self, pending: bool) -> bool:
        """Return whether this worker may apply a pending replay now.

        With a replay pending, the worker that holds the group's replay lock
        collects every partition and may apply it once it holds them all.
        Every other worker hands its partitions back meanwhile. Without a
        pending replay, every worker returns to its fair share.
        """
        if not pending:
            self._collecting = False
            await self.leases.end_replay()
            return False
        if not await self.leases.claim_replay():
            return False
        if not self._collecting:
            self._collecting = True
            logger.info(
                "pipeline %s collects every partition of group %s to apply a replay",
                self.pipeline,
                self.group,
            )
        return self.leases.holds_all()

    def positions(self, tracker: Tracked) -> dict[int, int]:
        """Return the read positions of the partitions the pipeline may read now."""
        readable = self.leases.readable()
        return {p: o for p, o in tracker.read.items() if p in readable}

    async def follow(
        self, tracker: Tracked, committed: dict[int, int], commit: Commit
    ) -> bool:
        """Take up new partitions and hand back drained ones; return whether any did.

        Raises the lease session's error when it was lost, because another
        worker may already read these partitions.
        """
        if self.leases.failure is not None:
            raise self.leases.failure

        owned = self.leases.owned
        # A replay moves every partition of the group, so drop the partitions
        # that this worker does not hold once none of their records is in work.
        unowned = [
            p for p in tracker.read if p not in owned and not tracker.pending.get(p)
        ]
        for partition in unowned:
            _drop(tracker, committed, partition)
        if unowned:
            await self.log.leave(self.group, unowned)

        drained = [p for p in self.leases.to_release() if not tracker.pending.get(p)]
        if drained:
            await commit()
            for partition in drained:
                _drop(tracker, committed, partition)
            await self.log.leave(self.group, drained)
            await self.leases.release(sorted(drained))

        joined = sorted(self.leases.readable() - tracker.read.keys())
        if not joined:
            return bool(drained)
        positions = await self.log.committed(self.group)
        for partition in joined:
            tracker.read[partition] = positions.get(partition, 0)
            tracker.pending[partition] = {}
            committed[partition] = tracker.read[partition]
        logger.info(
            "pipeline %s reads partitions %s from offsets %s",
            self.pipeline,
            joined,
            [tracker.read[p] for p in joined],
        )
        return True


def _drop(tracker: Tracked, committed: dict[int, int], partition: int) -> None:
    tracker.read.pop(partition, None)
    tracker.pending.pop(partition, None)
    committed.pop(partition, None)
