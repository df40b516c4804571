"""Hostile files in a B2MML inbox: each is rejected or left alone, none leaks a file."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from plantbus.backbone.sqlite import SqliteLog
from plantbus.connectors.files import FolderSource
from plantbus.events.catalogue import Catalogue
from plantbus.events.envelope import Event
from plantbus.formats.b2mml import parse_b2mml
from plantbus.ingest import Ingestor
from plantbus.state.dead_letters import DeadLetter

SECRET = "hostile-secret-7f3a"
SCHEDULE = "b2mml/examples/cocop_v0600/ProcessProductionSchedule.xml"


class Inbox:
    """A folder source over a real log, with the dead letters it stored."""

    def __init__(
        self, folder: Path, xsd: Path, log: SqliteLog, catalogue: Catalogue
    ) -> None:
        self.folder = folder
        self.log_path = log.path
        self.dead_letters: list[DeadLetter] = []
        self.ingest = Ingestor(log, catalogue)

        def parse(data: bytes, name: str) -> list[Event]:
            return parse_b2mml(data, name, xsd, "PLANT-1")

        self.source = FolderSource("inbox", folder, parse, poll_interval=0.05)
        for child in ("done", "rejected"):
            (folder / child).mkdir(parents=True, exist_ok=True)

    async def reject(self, letter: DeadLetter) -> None:
        self.dead_letters.append(letter)

    async def settle(self) -> None:
        """Poll twice, so that every unchanged file counts as complete."""
        for _ in range(2):
            await self.source.poll(self.ingest, self.reject)

    def logged(self) -> int:
        with sqlite3.connect(self.log_path) as connection:
            return int(connection.execute("SELECT count(*) FROM events").fetchone()[0])

    def names(self, child: str = "") -> set[str]:
        return set(os.listdir(self.folder / child)) - {"done", "rejected"}


@pytest.fixture
async def inbox(
    tmp_path: Path, samples_dir: Path, catalogue: Catalogue
) -> AsyncIterator[Inbox]:
    log = SqliteLog(tmp_path / "log.sqlite", partitions=4)
    await log.start()
    try:
        yield Inbox(tmp_path / "inbox", samples_dir / "b2mml" / "xsd", log, catalogue)
    finally:
        await log.close()


@pytest.fixture
def schedule(samples_dir: Path) -> bytes:
    return (samples_dir / SCHEDULE).read_bytes()


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text(SECRET)
    return path


def billion_laughs() -> bytes:
    entities = [b'<!ENTITY lol0 "lol">']
    for level in range(1, 10):
        entities.append(
            b'<!ENTITY lol%d "%s">' % (level, b"&lol%d;" % (level - 1) * 10)
        )
    return (
        b'<?xml version="1.0"?>\n<!DOCTYPE lolz [' + b"".join(entities) + b"]>\n"
        b'<ProcessProductionSchedule xmlns="http://www.mesa.org/xml/B2MML-V0600">'
        b"&lol9;</ProcessProductionSchedule>"
    )


async def test_folder_rejects_hostile_xml_without_reading_files(
    inbox: Inbox, schedule: bytes, secret_file: Path
) -> None:
    body = schedule.split(b"?>", 1)[1]
    external = (
        b'<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY xxe SYSTEM "'
        + secret_file.as_uri().encode()
        + b'">]>\n'
        + body.replace(b'releaseID=""', b'releaseID="&xxe;"', 1)
    )
    xinclude = schedule.replace(
        b"</ProcessProductionSchedule>",
        b'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="'
        + secret_file.as_uri().encode()
        + b'" parse="text"/></ProcessProductionSchedule>',
    )
    files = {
        "bomb.xml": billion_laughs(),
        "external.xml": external,
        "xinclude.xml": xinclude,
        "truncated.xml": schedule[: len(schedule) // 2],
        "empty.xml": b"",
        "deep.xml": b"<a>" * 10_000 + b"</a>" * 10_000,
    }
    inbox.folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (inbox.folder / name).write_bytes(data)

    await inbox.settle()

    assert inbox.names() == set()
    assert inbox.names("rejected") == set(files)
    assert {letter.details["file"] for letter in inbox.dead_letters} == set(files)
    for letter in inbox.dead_letters:
        assert SECRET not in letter.error


async def test_folder_leaves_directory_symlink_and_fifo(
    inbox: Inbox, schedule: bytes, secret_file: Path
) -> None:
    (inbox.folder / "folder.xml").mkdir()
    (inbox.folder / "folder.xml" / "inner.xml").write_bytes(schedule)
    (inbox.folder / "link.xml").symlink_to(secret_file)
    os.mkfifo(inbox.folder / "pipe.xml")

    await inbox.settle()

    assert inbox.names() == {"folder.xml", "link.xml", "pipe.xml"}
    assert inbox.dead_letters == []


async def test_folder_rejects_file_over_max_bytes(
    inbox: Inbox, schedule: bytes
) -> None:
    inbox.source.max_bytes = len(schedule) - 1
    (inbox.folder / "large.xml").write_bytes(schedule)

    await inbox.settle()

    assert inbox.names("rejected") == {"large.xml"}
    assert inbox.dead_letters[0].details["payload_truncated"] is True
    assert len(inbox.dead_letters[0].payload) == len(schedule) - 1


async def test_folder_absorbs_same_file_dropped_twice(
    inbox: Inbox, schedule: bytes
) -> None:
    (inbox.folder / "orders.xml").write_bytes(schedule)
    await inbox.settle()
    first = inbox.logged()
    (inbox.folder / "orders.xml").write_bytes(schedule)
    await inbox.settle()

    assert first > 0
    assert inbox.logged() == first
    assert inbox.names("done") == {"orders.xml", "orders.1.xml"}
    assert inbox.dead_letters == []
