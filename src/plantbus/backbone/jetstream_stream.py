"""The connection and the stream of a JetStream log: create, check and trim."""

from __future__ import annotations

import asyncio
import logging
import re
import time as clock
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from nats import errors as nats_errors
from nats.aio.client import Client
from nats.js import api
from nats.js import errors as js_errors
from nats.js.errors import BadRequestError
from nats.js.kv import KeyValue

from plantbus.backbone import jetstream_offsets as legacy
from plantbus.backbone import jetstream_scan as scans
from plantbus.errors import BackboneError

logger = logging.getLogger("plantbus.backbone")

_T = TypeVar("_T")

# Failures that pass once the client has reconnected or the stream (or a
# consumer) has a leader again.
_TRANSIENT = (
    TimeoutError,
    nats_errors.NoRespondersError,
    nats_errors.ConnectionReconnectingError,
    nats_errors.StaleConnectionError,
    js_errors.NoStreamResponseError,
    js_errors.ServiceUnavailableError,
    scans.ScanLost,
)

# Failed connection attempts: the first is logged, then every this many.
_LOG_EVERY = 100
_UNSAFE_IN_TYPE = re.compile(r"[^A-Za-z0-9_.-]")
_DESCRIPTION = "plantbus event log with {} partitions"
_PARTITIONS_IN_DESCRIPTION = re.compile(r"plantbus event log with (\d+) partitions")


async def connect(url: str, stream: str, connect_seconds: float) -> Client:
    """Connect to the comma-separated server URLs and reconnect without limit.

    Only the first connection has a deadline, `connect_seconds`, so that a
    wrong URL fails at start and not on the first append.
    """
    failures = 0

    async def on_error(exc: Exception) -> None:
        nonlocal failures
        failures += 1
        if failures % _LOG_EVERY == 1:
            logger.warning(
                "NATS connection of event log %s failed (%d times since the last "
                "success): %s",
                stream,
                failures,
                exc,
            )

    async def on_disconnect() -> None:
        if not nc.is_closed:
            logger.warning("Event log %s lost its NATS connection", stream)

    async def on_reconnect() -> None:
        nonlocal failures
        failures = 0
        logger.info("Event log %s reconnected to %s", stream, nc.connected_url)

    nc = Client()
    try:
        await asyncio.wait_for(
            nc.connect(
                servers=[part.strip() for part in url.split(",")],
                name=f"plantbus log {stream}",
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,  # type: ignore[arg-type]
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
            ),
            connect_seconds,
        )
    except Exception as exc:
        await nc.close()
        raise BackboneError(
            f"Could not connect to NATS at {url!r} within {connect_seconds} s "
            f"({exc!r}). Check that nats-server runs with JetStream enabled (-js) "
            "at that address."
        ) from exc
    return nc


def subject_for(stream: str, partition: int, event_type: str) -> str:
    """Return the subject of an event: `<stream>.p.<partition>.<event type>`."""
    # Characters that NATS subjects do not allow become '_'. The body keeps the
    # real type, and the subject's type part only helps filtering.
    tokens = _UNSAFE_IN_TYPE.sub("_", event_type).split(".")
    cleaned = ".".join(token or "_" for token in tokens)
    return f"{stream}.p.{partition}.{cleaned}"


def partition_filter(stream: str, partition: int) -> str:
    """Return the subject filter of one partition: `<stream>.p.<partition>.>`."""
    return f"{stream}.p.{partition}.>"


def is_transient(exc: BaseException) -> bool:
    """Return whether an error is one that trying again later can fix."""
    if isinstance(exc, js_errors.APIError) and exc.code == 503:
        return True
    return isinstance(exc, _TRANSIENT)


async def retrying(
    action: str,
    operation: Callable[[], Awaitable[_T]],
    seconds: float,
) -> _T:
    """Run `operation`, again after transient failures, for up to `seconds`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    delay = 0.05
    attempts = 0
    while True:
        try:
            return await operation()
        except Exception as exc:
            attempts += 1
            if not is_transient(exc):
                raise
            if loop.time() + delay > deadline:
                raise BackboneError(
                    f"Could not {action} within {seconds} s ({attempts} attempts, "
                    f"last error {exc!r}). Check that a majority of the stream's "
                    "servers is running and reachable."
                ) from exc
            if attempts == 1:
                logger.warning("Could not %s (%r); trying again", action, exc)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


def stream_config(
    stream: str,
    partitions: int,
    *,
    replicas: int,
    duplicate_window_seconds: float,
    max_age_seconds: float | None,
    max_bytes: int | None,
) -> api.StreamConfig:
    """Return the configuration of a log's stream, with the partition count."""
    return api.StreamConfig(
        name=stream,
        description=_DESCRIPTION.format(partitions),
        subjects=[f"{stream}.p.>"],
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        discard=api.DiscardPolicy.OLD,
        num_replicas=replicas,
        duplicate_window=duplicate_window_seconds,
        max_age=max_age_seconds or 0,
        max_bytes=max_bytes or -1,
        # Direct gets let a read find each partition's next record quickly.
        allow_direct=True,
    )


async def prepare_storage(
    nc: Client, url: str, config: api.StreamConfig, partitions: int, timeout: float
) -> KeyValue | None:
    """Create or check the stream; return an earlier version's offsets bucket."""
    replicas = config.num_replicas or 1
    try:
        await ensure_stream(nc, config, partitions)
        return await legacy.open_bucket(
            nc.jetstream(timeout=timeout), f"{config.name}-offsets"
        )
    except BackboneError:
        raise
    except Exception as exc:
        raise BackboneError(
            f"Could not create or check stream {config.name!r} at {url!r}: "
            f"{exc!r}. Check that JetStream is enabled and that `replicas` "
            f"({replicas}) is at most the number of servers in the cluster."
        ) from exc


async def ensure_stream(nc: Client, config: api.StreamConfig, partitions: int) -> None:
    """Create the stream, or check an existing one and update its limits."""
    assert config.name is not None
    manager = nc.jsm()
    try:
        await manager.add_stream(config)
        return
    except BadRequestError as exc:
        # 10058: a stream of that name exists with another configuration.
        if exc.err_code != 10058:
            raise

    info = await manager.stream_info(config.name)
    found = _PARTITIONS_IN_DESCRIPTION.fullmatch(info.config.description or "")
    if found is None:
        raise BackboneError(
            f"Stream {config.name!r} exists but is not a plantbus event log (its "
            f"description is {info.config.description!r}). Choose another `stream` "
            "name for the log."
        )
    if int(found.group(1)) != partitions:
        raise BackboneError(
            f"Stream {config.name!r} was created with {found.group(1)} partitions, "
            f"but `partitions` is {partitions}. The count is fixed for the life of "
            "a log; set it back or use a new stream name."
        )
    await manager.update_stream(config)
    logger.info("Updated stream %s to the configured limits", config.name)


async def trim(
    nc: Client,
    stream: str,
    *,
    max_age_seconds: float | None,
    max_bytes: int | None,
    timeout: float,
    retry_seconds: float,
) -> int:
    """Purge the oldest records beyond an age or a total body size; count them."""
    deleted = 0
    if max_age_seconds is not None:
        age = max_age_seconds
        deleted += await retrying(
            f"trim stream {stream!r} by age",
            lambda: trim_by_age(nc, stream, age, timeout),
            retry_seconds,
        )
    if max_bytes is not None:
        size = max_bytes
        deleted += await retrying(
            f"trim stream {stream!r} by size",
            lambda: trim_by_bytes(nc, stream, size, timeout),
            retry_seconds,
        )
    if deleted:
        logger.info(
            "Trimmed %d records from JetStream event log %s (max_age_seconds=%s "
            "max_bytes=%s)",
            deleted,
            stream,
            max_age_seconds,
            max_bytes,
        )
    return deleted


async def trim_by_age(
    nc: Client, stream: str, max_age_seconds: float, timeout: float
) -> int:
    """Purge the records stored more than `max_age_seconds` ago; count them."""
    info = await nc.jsm().stream_info(stream)
    if not info.state.messages:
        return 0
    moment = datetime.fromtimestamp(clock.time() - max_age_seconds, UTC)
    first = await scans.first_seq_at(
        nc, nc.jsm(), stream, f"{stream}.p.>", moment, timeout
    )
    # None: every record is older. Records appended after the stream_info
    # call have higher sequences and stay.
    keep_from = info.state.last_seq + 1 if first is None else first
    if keep_from <= info.state.first_seq:
        # Nothing is old enough, so no purge is sent: nats-server 2.9.10 deletes
        # every message for a purge request with seq 1.
        return 0
    return await scans.purge_before(nc, stream, keep_from, timeout)


async def trim_by_bytes(nc: Client, stream: str, max_bytes: int, timeout: float) -> int:
    """Purge the oldest records until the bodies left total `max_bytes` or less."""
    info = await nc.jsm().stream_info(stream)
    # The stream's stored size counts subjects and headers too, so a stream
    # within max_bytes has bodies within it, and no scan is needed.
    if not info.state.messages or info.state.bytes <= max_bytes:
        return 0

    # NOTE: this reads the headers of every record once; with the stream limit
    # `max_bytes` set, the server trims by itself and this path is rare.
    last = info.state.last_seq
    sizes = await scans.sizes_from(nc, nc.jsm(), stream, f"{stream}.p.>", timeout)
    sizes = [(seq, size) for seq, size in sizes if seq <= last]
    total = sum(size for _, size in sizes)
    keep_from = last + 1
    for seq, size in sizes:
        if total <= max_bytes:
            keep_from = seq
            break
        total -= size
    if keep_from <= info.state.first_seq:
        return 0
    return await scans.purge_before(nc, stream, keep_from, timeout)
