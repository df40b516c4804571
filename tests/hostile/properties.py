"""Shared pieces of the parser property tests: a time bound and sample mutations."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from plantbus.errors import EdiError
from plantbus.formats.shipnotice import EdiOutcome

T = TypeVar("T")

# Few examples keep the suite fast; the atheris harnesses under fuzz/ run millions.
# PLANTBUS_PROPERTY_EXAMPLES raises the count for a longer soak run.
# The deadline fails an example that runs slow, and `bounded` stops one that hangs.
EXAMPLES = int(os.environ.get("PLANTBUS_PROPERTY_EXAMPLES", "60"))
PROPERTY_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
HANG_SECONDS = 20

# Byte strings that parsers tend to get wrong, spliced into real samples.
TRICKY_BYTES = [
    b"",
    b"\x00",
    b"\xff\xfe",
    b"\xef\xbb\xbf",
    b"\r",
    b"\r\n",
    b"\n\n\n",
    b"'",
    b'"',
    b"?",
    b"+",
    b":",
    b"*",
    b"~",
    b"<",
    b"]]>",
    b"&amp;",
    b"&#0;",
    b"<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>",
    b"-1",
    b"1e400",
    b"NaN",
    b"9" * 40,
    b"2026-02-30T25:61:61Z",
    b"99999999999-01-01T00:00:00Z",
    "\u00e4\u20ac\U0001f600".encode(),
    b"\xc3\x28",
    b"A" * 3000,
]


class Hang(Exception):
    """An input kept a parser busy for longer than HANG_SECONDS."""


@contextlib.contextmanager
def bounded(seconds: float = HANG_SECONDS) -> Iterator[None]:
    """Raise Hang in the main thread if the block runs longer than `seconds`."""

    def expire(signum: int, frame: Any) -> None:
        raise Hang(f"the parser ran longer than {seconds} s on one input")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def parse_or_error(
    parse: Callable[[bytes], T], data: bytes, error: type[Exception]
) -> T | Exception:
    """Return what `parse` returns, or the `error` it raised; let anything else escape.

    The error must have a message, since operators read it in a dead letter.
    """
    with bounded():
        try:
            return parse(data)
        except error as exc:
            assert str(exc).strip(), f"{type(exc).__name__} has an empty message"
            return exc


def check_edi_outcome(read: Callable[[bytes], EdiOutcome], data: bytes) -> None:
    """Check that `read` raises an EdiError with a message or returns a stable outcome.

    A stable outcome has a message on every rejection, and a second read of the
    same bytes returns the same event ids and acknowledgement.
    """
    result = parse_or_error(read, data, EdiError)
    if isinstance(result, Exception):
        return
    for rejection in result.rejections:
        assert rejection.describe().strip(), "a rejection has no message"
    again = read(data)
    assert [e.id for e in again.events] == [e.id for e in result.events]
    assert again.acknowledgement == result.acknowledgement


class Samples(list[bytes]):
    """Sample files, shown by count in a failure report instead of in full."""

    def __repr__(self) -> str:
        return f"<{len(self)} sample files>"


def read_samples(folder: Path, pattern: str, max_bytes: int = 200_000) -> Samples:
    """Return the files under `folder` that match `pattern`, smallest first."""
    paths = sorted(
        (p for p in folder.rglob(pattern) if p.stat().st_size <= max_bytes),
        key=lambda p: (p.stat().st_size, p.name),
    )
    return Samples(p.read_bytes() for p in paths)


@st.composite
def mutated(draw: st.DrawFn, samples: list[bytes], max_mutations: int = 4) -> bytes:
    """Draw a sample and apply a few cuts, copies, flips and tricky splices."""
    data = bytearray(draw(st.sampled_from(samples)))
    for _ in range(draw(st.integers(1, max_mutations))):
        kind = draw(st.sampled_from(["cut", "copy", "flip", "splice", "truncate"]))
        size = len(data)
        start = draw(st.integers(0, size))
        end = draw(st.integers(start, min(size, start + 64)))
        if kind == "cut":
            del data[start:end]
        elif kind == "copy":
            data[start:start] = data[start:end] * draw(st.integers(1, 3))
        elif kind == "flip" and start < size:
            data[start] = draw(st.integers(0, 255))
        elif kind == "splice":
            piece = draw(
                st.one_of(st.sampled_from(TRICKY_BYTES), st.binary(max_size=16))
            )
            data[start:end] = piece
        else:
            del data[start:]
    return bytes(data)
