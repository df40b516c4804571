"""Shared checks for the atheris harnesses: one documented error type, a message."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import atheris


def samples_dir() -> Path:
    """Return the sample folder: $PLANTBUS_SAMPLES, else <repo>/../shared/samples."""
    default = Path(__file__).resolve().parents[1] / ".." / "shared" / "samples"
    return Path(os.environ.get("PLANTBUS_SAMPLES", default))


# Exception class names of open findings that the run lets pass; see run.sh.
KNOWN_ERRORS = frozenset(
    name for name in os.environ.get("FUZZ_KNOWN_ERRORS", "").split(",") if name
)


def check(parse: Callable[[bytes], Any], data: bytes, error: type[Exception]) -> None:
    """Run `parse` on `data`; let every exception but `error` with a message escape."""
    try:
        parse(data)
    except error as exc:
        if not str(exc).strip():
            raise AssertionError(f"{type(exc).__name__} without a message") from exc
    except Exception as exc:
        if type(exc).__name__ not in KNOWN_ERRORS:
            raise


def main(test_one_input: Callable[[bytes], None]) -> None:
    """Hand `test_one_input` and the command-line options to libFuzzer."""
    # The readers log a warning for some inputs; millions of them would only
    # slow the run down.
    logging.disable(logging.CRITICAL)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
