"""The EDI folder source with the real readers, the real Ingestor and SQLite log."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from plantbus.backbone.sqlite import SqliteLog
from plantbus.config.model import FolderSourceConfig, HubConfig
from plantbus.connectors.edi import EdiFolderSource
from plantbus.events.catalogue import Catalogue
from plantbus.hub import _build_edi_source, build_hub
from plantbus.ingest import Ingestor
from plantbus.state.dead_letters import DeadLetter

X12 = ("edi", "x12")
EDIFACT = ("edi", "edifact", "php-edifact")


class Harness:
    """A real log and Ingestor, with the dead letters kept in a list."""

    def __init__(self, log: SqliteLog) -> None:
        self.log = log
        self.ingest = Ingestor(log, Catalogue.load())
        self.dead_letters: list[DeadLetter] = []

    async def reject(self, letter: DeadLetter) -> None:
        self.dead_letters.append(letter)

    async def events(self) -> list[Any]:
        records = await self.log.read({p: 0 for p in range(4)}, 1000)
        return [record.event for record in records]


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    log = SqliteLog(tmp_path / "log.sqlite", partitions=4)
    await log.start()
    yield Harness(log)
    await log.close()


def make_source(tmp_path: Path, standard: str) -> EdiFolderSource:
    config = FolderSourceConfig(
        kind="folder",
        name=f"{standard}-in",
        path=tmp_path / "inbox",
        format=standard,  # type: ignore[arg-type]
        outbox=tmp_path / "outbox",
        poll_seconds=0.01,
    )
    source = _build_edi_source(config)
    assert isinstance(source, EdiFolderSource)
    for folder in (source.inbox, source.done_dir, source.rejected_dir, source.outbox):
        folder.mkdir(parents=True, exist_ok=True)
    return source


async def drop(source: EdiFolderSource, harness: Harness, sample: Path) -> None:
    """Copy a sample into the inbox and poll until the source has processed it."""
    shutil.copy(sample, source.inbox / sample.name)
    await source.poll(harness.ingest, harness.reject)
    assert await source.poll(harness.ingest, harness.reject) == 1


async def test_edi_source_856_ingested_and_997_written(
    tmp_path: Path, harness: Harness, samples_dir: Path
) -> None:
    source = make_source(tmp_path, "x12")
    sample = samples_dir.joinpath(*X12, "oopfactory_x12parser", "856_Example1.txt")

    await drop(source, harness, sample)

    (event,) = await harness.events()
    assert event.id == "7daaf107-2736-5047-bbd7-f65357a00238"
    assert event.source == "urn:plantbus:source:x12-in"
    assert harness.dead_letters == []
    assert (source.done_dir / sample.name).exists()
    acknowledgement = (source.outbox / "856_Example1.997.x12").read_bytes()
    assert b"AK5~A*" in acknowledgement
    assert b"AK9~A~1~1~1*" in acknowledgement


async def test_edi_source_same_asn_twice_one_event(
    tmp_path: Path, harness: Harness, samples_dir: Path
) -> None:
    source = make_source(tmp_path, "x12")
    sample = samples_dir.joinpath(*X12, "oopfactory_x12parser", "856_Example3.txt")

    await drop(source, harness, sample)
    await drop(source, harness, sample)

    assert len(await harness.events()) == 1
    assert sorted(p.name for p in source.outbox.iterdir()) == [
        "856_Example3.997.1.x12",
        "856_Example3.997.x12",
    ]


async def test_edi_source_unsupported_set_rejected(
    tmp_path: Path, harness: Harness, samples_dir: Path
) -> None:
    source = make_source(tmp_path, "x12")
    sample = samples_dir.joinpath(*X12, "walmartlabs_gozer", "po850.txt")

    await drop(source, harness, sample)

    assert await harness.events() == []
    (letter,) = harness.dead_letters
    assert letter.payload == sample.read_bytes()
    assert letter.stage == "ingest"
    assert letter.content_type == "application/edi-x12"
    assert "ST01 is '850'" in letter.error
    assert "SE01 is '33'" in letter.error
    assert letter.details["problems"][0]["location"].startswith("group '1421'")
    assert (source.rejected_dir / sample.name).exists()
    acknowledgement = (source.outbox / "po850.997.x12").read_text()
    assert "AK5*R*1*4\n" in acknowledgement


async def test_edi_source_missing_isa_no_acknowledgement(
    tmp_path: Path, harness: Harness, samples_dir: Path
) -> None:
    source = make_source(tmp_path, "x12")
    sample = samples_dir.joinpath(*X12, "walmartlabs_gozer", "x12.missing.ISA.txt")

    await drop(source, harness, sample)

    (letter,) = harness.dead_letters
    assert letter.payload == sample.read_bytes()
    (problem,) = letter.details["problems"]
    assert problem["segment"] == "GS"
    assert problem["position"] == 1
    assert problem["value"].startswith("GS*SH*")
    assert "ISA segment" in problem["rule"]
    assert list(source.outbox.iterdir()) == []


async def test_edi_source_desadv_ingested_and_contrl_written(
    tmp_path: Path, harness: Harness, samples_dir: Path
) -> None:
    source = make_source(tmp_path, "edifact")
    first = samples_dir.joinpath(*EDIFACT, "D96ADESADV.edi")
    second = samples_dir.joinpath(*EDIFACT, "example_utf8.edi")

    await drop(source, harness, first)
    await drop(source, harness, second)

    (event,) = await harness.events()
    assert event.data["asn_id"] == "Y02197250"
    assert harness.dead_letters == []
    acknowledgement = (source.outbox / "D96ADESADV.contrl.edi").read_bytes()
    assert b"UCM+142+DESADV:0:96A:UN+7'" in acknowledgement


async def test_edi_source_order_error_names_element(
    tmp_path: Path, harness: Harness, samples_dir: Path
) -> None:
    source = make_source(tmp_path, "edifact")
    sample = samples_dir.joinpath(*EDIFACT, "example_order_error.edi")

    await drop(source, harness, sample)

    (letter,) = harness.dead_letters
    assert letter.content_type == "application/edifact"
    assert "segment IMD at position 359 element 3 component 6" in letter.error
    assert "syntax error code 16" in letter.error
    acknowledgement = (source.outbox / "example_order_error.contrl.edi").read_bytes()
    assert b"UCS+359+16'UCD+16+3:6'" in acknowledgement


async def test_edi_source_built_by_hub_from_config(tmp_path: Path) -> None:
    config = HubConfig.model_validate(
        {
            "hub": {"data_dir": str(tmp_path / "var")},
            "api": {"enabled": False},
            "sources": [
                {
                    "kind": "folder",
                    "name": "suppliers",
                    "path": str(tmp_path / "in"),
                    "format": "x12",
                    "outbox": str(tmp_path / "out"),
                    "timezone": "America/Chicago",
                }
            ],
        }
    )

    hub = await build_hub(config)
    try:
        (source,) = [s for s in hub.sources if isinstance(s, EdiFolderSource)]
        assert source.outbox == tmp_path / "out"
        assert source.standard == "x12"
    finally:
        await hub.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"format": "x12"}, "needs `outbox`"),
        ({"format": "edifact", "outbox": "o", "timezone": "Mars/Base"}, "IANA"),
    ],
)
def test_edi_source_config_rejects_bad_options(
    options: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        FolderSourceConfig.model_validate(
            {"kind": "folder", "name": "in", "path": "in", **options}
        )
