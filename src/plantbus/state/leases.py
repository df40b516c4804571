"""Partition leases: which worker process reads which partition of a consumer group.

Several `plantbus run` processes on one hub file share each pipeline's
consumer group. Every partition of every group is read by exactly one live
worker, so the events of a partition key stay in log order across workers.

A lease is a PostgreSQL session-level advisory lock on the key
(hash of hub name and consumer group, partition). PostgreSQL drops a session's
advisory locks when the session ends, also when the worker is killed with
kill -9, so a dead worker's partitions become free at once. For each
consumer group, each worker also holds a membership lock (one slot number per
worker), and reads the group's members from `pg_locks` to compute its fair
share. Membership is per group, so a process that runs other pipelines, or
none, does not count.

The balancing rule, run every `interval` seconds: with n live members sorted by
slot, the member at rank r should hold P // n partitions, plus one when
r < P % n. A member above its share marks its extra partitions `releasing`; the
pipeline stops reading them, finishes the records in work, commits and
releases them. A member below its share takes free partitions with
pg_try_advisory_lock. Three workers split 16 partitions 6, 5 and 5, and take
over a dead worker's partitions on the next round.

A replay moves every partition of a group, so one worker applies it while it
holds all of them. The worker that takes the group's replay lock sets its
demand to every partition, and the others set theirs to none: they finish
their records in work, commit and hand their partitions back. Once the
replay is applied, every worker returns to its fair share and the others
start the partitions they take at the moved offsets.

Sources that must not run twice, such as a broker subscription with a fixed
client id or a folder, run under a source lease: an advisory lock per (hub,
source). The worker that takes it runs the source, and the others try again
every `interval` seconds, so one of them takes the source over once the
holder's session ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import zlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Literal

import psycopg
from psycopg import AsyncConnection

from plantbus.errors import PlantbusError
from plantbus.state.postgres import describe_dsn

logger = logging.getLogger("plantbus.leases")

# Highest number of worker processes of one hub.
MAX_MEMBERS = 1024

_HELD = """
SELECT objid::bigint FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 2
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND classid = %s::bigint::oid
"""


def lock_class(*names: str) -> int:
    """Return the first advisory-lock key for a hub's group or membership.

    The key is 31 bits of a CRC-32, so it fits PostgreSQL's int4 key. Two
    groups whose names collide would share partition locks: each partition
    would then be held by one worker for both groups, which is still correct
    but less evenly spread.
    """
    return zlib.crc32("\x00".join(names).encode("utf-8")) & 0x7FFFFFFF


def fair_share(partitions: int, members: list[int], slot: int) -> int:
    """Return how many partitions the member holding `slot` should hold."""
    rank = sorted(members).index(slot)
    base, extra = divmod(partitions, len(members))
    return base + (1 if rank < extra else 0)


class GroupLeases:
    """The partitions of one consumer group that this worker holds."""

    def __init__(self, manager: PartitionLeases, group: str) -> None:
        self.manager = manager
        self.group = group
        self.key = lock_class(manager.hub, "group", group)
        self.members_key = lock_class(manager.hub, "members", group)
        # This worker's membership slot, and the slots of every live member.
        self.slot: int | None = None
        self.members: list[int] = []
        self.owned: set[int] = set()
        self.releasing: set[int] = set()
        # How many partitions this worker aims for: its fair share, none, or
        # all of them while it applies a replay.
        self.demand: Literal["fair", "none", "all"] = "fair"
        self.replay_key = lock_class(manager.hub, "replay", group)
        self.replay_claimed = False

    @property
    def failure(self) -> BaseException | None:
        """Error that ended the lease session, on which the pipeline must stop."""
        return self.manager.failure

    def readable(self) -> frozenset[int]:
        """Return the partitions the pipeline may read now."""
        return frozenset(self.owned - self.releasing)

    def to_release(self) -> frozenset[int]:
        """Return held partitions to finish, commit and then hand back."""
        return frozenset(self.releasing & self.owned)

    async def release(self, partitions: Iterable[int]) -> None:
        """Hand partitions back; call only when none of their records is in work."""
        await self.manager.unlock(self, partitions)

    async def claim_replay(self) -> bool:
        """Take the group's replay lock unless another worker has it; return success.

        The holder's demand becomes every partition and everyone else's none,
        from the next balancing round on.
        """
        if not self.replay_claimed:
            self.replay_claimed = await self.manager.try_lock(self.replay_key, 0)
        self.demand = "all" if self.replay_claimed else "none"
        return self.replay_claimed

    def holds_all(self) -> bool:
        """Return whether this worker holds every partition and releases none."""
        return len(self.owned) == self.manager.partitions and not self.releasing

    async def end_replay(self) -> None:
        """Return to the fair share and hand back the replay lock if held."""
        self.demand = "fair"
        if self.replay_claimed:
            await self.manager.unlock_key(self.replay_key, 0)
            self.replay_claimed = False


class PartitionLeases:
    """Hold partition leases for every consumer group of one worker process."""

    def __init__(
        self,
        dsn: str,
        hub: str,
        partitions: int,
        *,
        interval: float = 1.0,
        worker: str | None = None,
    ) -> None:
        self.dsn = dsn
        self.hub = hub
        self.partitions = partitions
        self.interval = interval
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"
        self.groups: dict[str, GroupLeases] = {}
        self.failure: BaseException | None = None
        self._connection: AsyncConnection[tuple[int]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def group(self, name: str) -> GroupLeases:
        """Return the leases of a consumer group, registering it on first use."""
        if name not in self.groups:
            self.groups[name] = GroupLeases(self, name)
        return self.groups[name]

    async def start(self) -> None:
        """Connect, join as a member and start balancing in the background."""
        try:
            self._connection = await AsyncConnection.connect(
                self.dsn,
                autocommit=True,
                application_name=f"plantbus-worker {self.hub} {self.worker}"[:63],
                connect_timeout=10,
            )
        except psycopg.OperationalError as exc:
            raise PlantbusError(
                f"Cannot connect to PostgreSQL for partition leases, "
                f"{describe_dsn(self.dsn)}: {exc}. Check `state.dsn`."
            ) from exc
        await self.rebalance()
        self._task = asyncio.create_task(self._balance_periodically())
        logger.info(
            "worker %s of hub %s holds partitions %s",
            self.worker,
            self.hub,
            {name: sorted(leases.owned) for name, leases in self.groups.items()},
        )

    async def close(self) -> None:
        """Stop balancing and end the session, which releases every lease."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
        for leases in self.groups.values():
            leases.slot = None
            leases.owned.clear()
            leases.releasing.clear()
            leases.replay_claimed = False

    async def run_exclusively(
        self,
        source: str,
        run: Callable[[asyncio.Event], Awaitable[None]],
        stop: asyncio.Event,
    ) -> None:
        """Run a source while this worker holds its lease; wait while another does.

        `run` receives the event that stops the source: it is set when `stop`
        is, and when the lease session is lost, because another worker may
        then take the source over.
        """
        key = lock_class(self.hub, "source", source)
        waiting_logged = False
        while True:
            if stop.is_set():
                return
            if self.failure is not None:
                raise self.failure
            if await self.try_lock(key, 0):
                break
            if not waiting_logged:
                logger.info(
                    "worker %s waits for source %s, which another worker runs",
                    self.worker,
                    source,
                )
                waiting_logged = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

        logger.info("worker %s runs source %s", self.worker, source)
        source_stop = asyncio.Event()
        watcher = asyncio.create_task(self._stop_on_failure(stop, source_stop))
        try:
            await run(source_stop)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            if self.failure is None and self._connection is not None:
                with contextlib.suppress(psycopg.Error):
                    await self.unlock_key(key, 0)
        if self.failure is not None:
            raise self.failure

    async def _stop_on_failure(
        self, stop: asyncio.Event, source_stop: asyncio.Event
    ) -> None:
        while not stop.is_set() and self.failure is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
        source_stop.set()

    def _db(self) -> AsyncConnection[tuple[int]]:
        if self._connection is None:
            raise PlantbusError("The partition leases are not started; call start().")
        return self._connection

    async def try_lock(self, key: int, number: int) -> bool:
        """Take an advisory lock of this session without waiting; return success."""
        cursor = await self._db().execute(
            "SELECT pg_try_advisory_lock(%s, %s)", (key, number)
        )
        row = await cursor.fetchone()
        return bool(row and row[0])

    async def _held(self, key: int) -> set[int]:
        cursor = await self._db().execute(_HELD, (key,))
        return {row[0] for row in await cursor.fetchall()}

    async def _join(self, leases: GroupLeases) -> int:
        for slot in range(MAX_MEMBERS):
            if await self.try_lock(leases.members_key, slot):
                return slot
        raise PlantbusError(
            f"Consumer group {leases.group!r} of hub {self.hub!r} already has "
            f"{MAX_MEMBERS} worker processes; stop some before starting more."
        )

    async def rebalance(self) -> None:
        """Read each group's members, then take or mark partitions to a fair share."""
        for leases in self.groups.values():
            if leases.slot is None:
                leases.slot = await self._join(leases)
            leases.members = sorted(await self._held(leases.members_key))
            if leases.slot not in leases.members:
                raise PlantbusError(
                    f"Worker {self.worker} lost its membership lock of consumer "
                    f"group {leases.group!r}; its session was ended on the server."
                )
            if leases.demand == "all":
                share = self.partitions
            elif leases.demand == "none":
                share = 0
            else:
                share = fair_share(self.partitions, leases.members, leases.slot)
            await self._balance(leases, share)

    async def _balance(self, leases: GroupLeases, share: int) -> None:
        active = leases.owned - leases.releasing
        if len(active) > share:
            # Give back the highest partitions first, so the layout is stable.
            extra = sorted(active)[share:]
            leases.releasing.update(extra)
            logger.info(
                "worker %s hands back partitions %s of group %s",
                self.worker,
                extra,
                leases.group,
            )
            return
        if len(active) < share:
            # Partitions marked for release but not yet handed back count
            # towards the share again before free ones are locked.
            while leases.releasing and len(active) < share:
                partition = min(leases.releasing)
                leases.releasing.discard(partition)
                active.add(partition)
            taken = await self._take_free(leases, share - len(active))
            if taken:
                logger.info(
                    "worker %s took partitions %s of group %s",
                    self.worker,
                    taken,
                    leases.group,
                )

    async def _take_free(self, leases: GroupLeases, count: int) -> list[int]:
        held = await self._held(leases.key)
        taken: list[int] = []
        for partition in range(self.partitions):
            if len(taken) >= count:
                break
            if partition in held or partition in leases.owned:
                continue
            if await self.try_lock(leases.key, partition):
                leases.owned.add(partition)
                taken.append(partition)
        return taken

    async def unlock_key(self, key: int, number: int) -> None:
        """Release one advisory lock of this session."""
        await self._db().execute("SELECT pg_advisory_unlock(%s, %s)", (key, number))

    async def unlock(self, leases: GroupLeases, partitions: Iterable[int]) -> None:
        """Release partition leases of a group that this worker holds."""
        released = sorted(set(partitions) & leases.owned)
        for partition in released:
            await self.unlock_key(leases.key, partition)
            leases.owned.discard(partition)
            leases.releasing.discard(partition)
        if not released:
            return
        logger.info(
            "worker %s released partitions of group %s; holds %s",
            self.worker,
            leases.group,
            sorted(leases.owned),
        )

    async def _balance_periodically(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.interval)
            try:
                await self.rebalance()
            except (psycopg.Error, PlantbusError) as exc:
                # Without the session, other workers may already hold these
                # partitions: reading on could deliver an event twice or out
                # of order, so the pipelines must stop.
                logger.error(
                    "worker %s lost its partition leases of hub %s: %s",
                    self.worker,
                    self.hub,
                    exc,
                )
                self.failure = PlantbusError(
                    f"Worker {self.worker} lost its PostgreSQL session for partition "
                    f"leases ({exc}); it stops so that another worker takes over "
                    f"its partitions. Restart it once the database is reachable."
                )
                for leases in self.groups.values():
                    leases.owned.clear()
                    leases.releasing.clear()
                    leases.replay_claimed = False
                return
