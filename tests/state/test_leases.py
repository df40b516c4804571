"""Partition leases on a real PostgreSQL server, in-process and across processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from plantbus.state.leases import PartitionLeases, fair_share, lock_class

from .conftest import advisory_lock_holders

PARTITIONS = 16
WORKER = Path(__file__).with_name("lease_worker.py")


@pytest.fixture
def hub_name() -> str:
    return f"lease-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def open_leases(
    postgres_dsn: str, hub_name: str
) -> AsyncIterator[list[PartitionLeases]]:
    """Collect started PartitionLeases and close them after the test."""
    handles: list[PartitionLeases] = []
    yield handles
    for handle in handles:
        await handle.close()


async def _start(dsn: str, hub: str, handles: list[PartitionLeases]) -> PartitionLeases:
    leases = PartitionLeases(dsn, hub, PARTITIONS, interval=0.1)
    leases.group("erp-postings")
    await leases.start()
    handles.append(leases)
    return leases


async def _settle(handles: list[PartitionLeases], timeout: float = 10.0) -> None:
    """Hand back released partitions as a pipeline would, until nothing moves."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        moving = False
        for leases in handles:
            group = leases.group("erp-postings")
            if group.to_release():
                moving = True
                await group.release(sorted(group.to_release()))
        counts = [len(leases.group("erp-postings").owned) for leases in handles]
        if not moving and sum(counts) == PARTITIONS and max(counts) - min(counts) <= 1:
            return
        await asyncio.sleep(0.05)


def test_fair_share_splits_sixteen_over_three() -> None:
    members = [4, 0, 9]

    shares = [fair_share(16, members, slot) for slot in sorted(members)]

    assert shares == [6, 5, 5]
    assert fair_share(16, [7], 7) == 16
    assert sum(fair_share(5, list(range(8)), slot) for slot in range(8)) == 5


def test_lock_class_differs_per_group_and_fits_int4() -> None:
    keys = {lock_class("hub", "group", name) for name in ("a", "b", "erp-postings")}

    assert len(keys) == 3
    assert all(0 <= key < 2**31 for key in keys)


async def test_leases_single_worker_holds_every_partition(
    postgres_dsn: str, hub_name: str, open_leases: list[PartitionLeases]
) -> None:
    leases = await _start(postgres_dsn, hub_name, open_leases)

    group = leases.group("erp-postings")

    assert group.owned == set(range(PARTITIONS))
    assert group.readable() == frozenset(range(PARTITIONS))
    assert group.members == [group.slot]


async def test_leases_second_worker_gets_half_after_release(
    postgres_dsn: str, hub_name: str, open_leases: list[PartitionLeases]
) -> None:
    first = await _start(postgres_dsn, hub_name, open_leases)
    second = await _start(postgres_dsn, hub_name, open_leases)

    await _settle(open_leases)

    owned = [leases.group("erp-postings").owned for leases in (first, second)]
    assert len(owned[0]) == 8
    assert len(owned[1]) == 8
    assert owned[0].isdisjoint(owned[1])


async def test_leases_member_of_other_group_not_counted(
    postgres_dsn: str, hub_name: str, open_leases: list[PartitionLeases]
) -> None:
    mine = await _start(postgres_dsn, hub_name, open_leases)
    other = PartitionLeases(postgres_dsn, hub_name, PARTITIONS, interval=0.1)
    other.group("machine-stops")
    await other.start()
    open_leases.append(other)
    await asyncio.sleep(0.3)

    assert mine.group("erp-postings").owned == set(range(PARTITIONS))
    assert mine.group("erp-postings").to_release() == frozenset()
    assert other.group("machine-stops").owned == set(range(PARTITIONS))


async def test_leases_other_hub_not_affected(
    postgres_dsn: str, hub_name: str, open_leases: list[PartitionLeases]
) -> None:
    mine = await _start(postgres_dsn, hub_name, open_leases)
    other = await _start(postgres_dsn, hub_name + "-other", open_leases)

    assert mine.group("erp-postings").owned == set(range(PARTITIONS))
    assert other.group("erp-postings").owned == set(range(PARTITIONS))


async def test_leases_close_frees_partitions_for_others(
    postgres_dsn: str, hub_name: str, open_leases: list[PartitionLeases]
) -> None:
    first = await _start(postgres_dsn, hub_name, open_leases)
    second = await _start(postgres_dsn, hub_name, open_leases)
    await _settle(open_leases)

    await first.close()
    open_leases.remove(first)
    await _settle(open_leases)

    assert second.group("erp-postings").owned == set(range(PARTITIONS))
    group = second.group("erp-postings")
    assert group.members == [group.slot]


async def test_leases_lost_session_sets_failure(
    postgres_dsn: str, hub_name: str, open_leases: list[PartitionLeases]
) -> None:
    leases = await _start(postgres_dsn, hub_name, open_leases)
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name LIKE %s",
            (f"plantbus-worker {hub_name} %",),
        )

    deadline = time.monotonic() + 10
    while leases.failure is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)

    assert leases.failure is not None
    assert "lost its PostgreSQL session" in str(leases.failure)
    assert leases.group("erp-postings").owned == set()
    assert leases.group("erp-postings").readable() == frozenset()


# Real processes


class WorkerProcess:
    """A lease_worker.py subprocess and the partitions it last reported."""

    def __init__(self, dsn: str, hub: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), dsn, hub, str(PARTITIONS)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.owned: set[int] = set()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.owned = set(json.loads(line)["owned"])

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def workers(postgres_dsn: str, hub_name: str) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        if worker.process.poll() is None:
            worker.kill()


def _lock_holders(dsn: str, hub: str) -> dict[int, int]:
    """Return partition -> server backend pid of the group's partition locks."""
    return advisory_lock_holders(dsn, lock_class(hub, "group", "erp-postings"))


def _wait_for_split(
    workers: list[WorkerProcess], sizes: list[int], timeout: float = 15.0
) -> list[set[int]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        owned = [set(w.owned) for w in workers]
        covered = len(set().union(*owned)) == PARTITIONS
        if sorted(len(o) for o in owned) == sizes and covered:
            return owned
        time.sleep(0.05)
    return [set(w.owned) for w in workers]


def test_leases_processes_take_over_after_kill(
    postgres_dsn: str, hub_name: str, workers: list[WorkerProcess]
) -> None:
    for _ in range(3):
        workers.append(WorkerProcess(postgres_dsn, hub_name))

    owned = _wait_for_split(workers, [5, 5, 6])

    assert sorted(len(o) for o in owned) == [5, 5, 6]
    assert set().union(*owned) == set(range(PARTITIONS))
    assert len(set(_lock_holders(postgres_dsn, hub_name).values())) == 3

    victim, *survivors = workers
    lost = owned[0]
    victim.kill()
    after = _wait_for_split(survivors, [8, 8])

    assert sorted(len(o) for o in after) == [8, 8]
    assert after[0].isdisjoint(after[1])
    assert lost <= after[0] | after[1]
    holders = _lock_holders(postgres_dsn, hub_name)
    assert set(holders) == set(range(PARTITIONS))
    assert len(set(holders.values())) == 2


async def test_leases_source_runs_in_one_worker(
    postgres_dsn: str, hub_name: str, open_leases: list[PartitionLeases]
) -> None:
    workers = {
        "first": await _start(postgres_dsn, hub_name, open_leases),
        "second": await _start(postgres_dsn, hub_name, open_leases),
    }
    running: list[str] = []
    stop = asyncio.Event()

    def source(worker: str) -> Callable[[asyncio.Event], Awaitable[None]]:
        async def run(source_stop: asyncio.Event) -> None:
            running.append(worker)
            await source_stop.wait()
            running.remove(worker)

        return run

    tasks = {
        name: asyncio.create_task(leases.run_exclusively("inbox", source(name), stop))
        for name, leases in workers.items()
    }
    await asyncio.sleep(0.5)
    assert len(running) == 1
    [holder] = running
    [other] = [name for name in workers if name != holder]

    # The holder's session ends, as after kill -9: the other worker takes over.
    open_leases.remove(workers[holder])
    await workers[holder].close()
    workers[holder].failure = RuntimeError("session ended")
    async with asyncio.timeout(5):
        while running != [other]:
            await asyncio.sleep(0.05)

    stop.set()
    outcomes = await asyncio.gather(*tasks.values(), return_exceptions=True)
    results = dict(zip(tasks, outcomes, strict=True))
    assert isinstance(results[holder], RuntimeError)
    assert results[other] is None
    assert running == []
