"""Fixtures for every test: where the sample documents live, a real trytond."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from plantbus.sim.erp_setup import create_database
from plantbus.sim.trytond_server import TrytondServer

_REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """Return the sample folder: $PLANTBUS_SAMPLES, else <repo>/../shared/samples."""
    default = _REPOSITORY / ".." / "shared" / "samples"
    folder = Path(os.environ.get("PLANTBUS_SAMPLES", default))
    if not (folder / "b2mml").is_dir():
        pytest.fail(f"Sample folder {folder} has no b2mml/; set PLANTBUS_SAMPLES.")
    return folder


@pytest.fixture(scope="session")
def b2mml_xsd(samples_dir: Path) -> Path:
    """Return the B2MML schema folder with one subfolder per version."""
    return samples_dir / "b2mml" / "xsd"


@pytest.fixture(scope="session")
def tryton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrytondServer]:
    """Start trytond on a fresh copy of the demo database for the whole session."""
    folder = tmp_path_factory.mktemp("tryton")
    database = create_database(folder / "db", "plantbus_test")
    server = TrytondServer(database, folder / "work")
    server.start()
    yield server
    server.stop()
