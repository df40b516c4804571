"""Fixtures for every test: where the sample documents live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
