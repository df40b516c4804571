"""Assemble a hub from its configuration and run it until it is stopped."""

from __future__ import annotations

import asyncio
import fcntl
import gc
import logging
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from plantbus.backbone.log import EventLog
from plantbus.config.model import (
    B2mmlFolderSinkConfig,
    DeliverStep,
    EnrichStep,
    FileSinkConfig,
    FilterStep,
    FolderSourceConfig,
    HttpSourceConfig,
    HubConfig,
    MapStep,
    MemorySinkConfig,
    MqttSinkConfig,
    MqttSourceConfig,
    MtconnectSourceConfig,
    OpcUaSourceConfig,
    PipelineConfig,
    RestSinkConfig,
    RouteStep,
    TrytonOrdersSourceConfig,
    TrytonSinkConfig,
    TrytonSystem,
    ValidateStep,
)
from plantbus.connectors.base import Sink, Source
from plantbus.errors import ConfigError, DeliveryError, PlantbusError
from plantbus.events.catalogue import Catalogue
from plantbus.ingest import BacklogGate, Ingestor
from plantbus.pipeline import steps as step_kinds
from plantbus.pipeline.circuit import CircuitBreaker
from plantbus.pipeline.delivery import Deliverer
from plantbus.pipeline.runtime import PipelineRuntime
from plantbus.state.dead_letters import DeadLetter
from plantbus.state.store import StateStore

if TYPE_CHECKING:
    from plantbus.state.leases import PartitionLeases

logger = logging.getLogger("plantbus.hub")


@dataclass
class Hub:
    """A running hub: log, state, sources, sinks and pipelines of one hub file."""

    config: HubConfig
    log: EventLog
    state: StateStore
    catalogue: Catalogue
    ingest: Ingestor
    systems: dict[str, Any] = field(default_factory=dict)
    sources: list[Source] = field(default_factory=list)
    sinks: dict[str, Sink] = field(default_factory=dict)
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)
    pipelines: list[PipelineRuntime] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    # Open file whose exclusive lock marks data_dir as in use by this hub.
    lock: IO[bytes] | None = None
    # Partition leases when several worker processes share the pipelines.
    leases: PartitionLeases | None = None

    async def backlog(self) -> int:
        """Return how many events the slowest pipeline has not committed yet."""
        lags = [await self.log.lag(pipeline.group) for pipeline in self.pipelines]
        return max(lags, default=0)

    async def reject(self, letter: DeadLetter) -> None:
        """Store input that a source could not turn into events."""
        await self.state.add_dead_letter(letter)

    def stop(self) -> None:
        """Ask every source and pipeline to stop; `run` returns once they have."""
        if not self.stopping.is_set():
            logger.info("hub %s stopping", self.config.hub.name)
        self.stopping.set()

    async def run(self) -> None:
        """Run sources and pipelines until `stop` is called or one of them fails."""
        for sink in self.sinks.values():
            await sink.start()
        limit = self.config.backbone.max_backlog_events
        gate = (
            BacklogGate(self.backlog, limit, self.stopping)
            if limit is not None
            else None
        )
        tasks = [
            asyncio.create_task(
                self._run_source(source, gate), name=f"source:{source.name}"
            )
            for source in self.sources
        ] + [
            asyncio.create_task(pipeline.run(), name=f"pipeline:{pipeline.name}")
            for pipeline in self.pipelines
        ]
        tasks.append(asyncio.create_task(self._trim_periodically(), name="retention"))
        logger.info(
            "hub %s running: %d sources, %d sinks, %d pipelines",
            self.config.hub.name,
            len(self.sources),
            len(self.sinks),
            len(self.pipelines),
        )
        self.started.set()
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    logger.error("%s failed: %s", task.get_name(), task.exception())
                    self.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            failures = [
                t.exception()
                for t in tasks
                if not t.cancelled() and t.exception() is not None
            ]
            if failures:
                raise failures[0]  # type: ignore[misc]
        finally:
            await self.close()

    async def _run_source(self, source: Source, gate: BacklogGate | None) -> None:
        ingest = (
            gate.wrap(self.ingest, source.name)
            if gate is not None and source.can_wait
            else self.ingest
        )
        if self.leases is None or not source.exclusive:
            await source.run(ingest, self.reject, self.stopping)
            return
        await self.leases.run_exclusively(
            source.name,
            lambda stop: source.run(ingest, self.reject, stop),
            self.stopping,
        )

    async def close(self) -> None:
        """Close sinks, systems, the state store and the log."""
        for sink in self.sinks.values():
            await sink.close()
        for system in self.systems.values():
            close = getattr(system, "close", None)
            if close is not None:
                await close()
        if self.leases is not None:
            await self.leases.close()
        await self.state.close()
        await self.log.close()
        if self.lock is not None:
            self.lock.close()
            self.lock = None
        logger.info("hub %s stopped", self.config.hub.name)

    async def _trim_periodically(self) -> None:
        retention = self.config.backbone.retention
        while not self.stopping.is_set():
            max_bytes = (
                int(retention.max_megabytes * 1024 * 1024)
                if retention.max_megabytes
                else None
            )
            max_age = (
                retention.max_age_hours * 3600 if retention.max_age_hours else None
            )
            if max_age or max_bytes:
                removed = await self.log.trim(
                    max_age_seconds=max_age, max_bytes=max_bytes
                )
                if removed:
                    logger.info("retention removed %d records from the log", removed)
            try:
                await asyncio.wait_for(self.stopping.wait(), timeout=600)
            except TimeoutError:
                continue

    def install_signal_handlers(self) -> None:
        """Stop cleanly on SIGTERM and SIGINT."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)


def _lock_data_dir(data_dir: Path) -> IO[bytes]:
    """Take an exclusive lock on a hub's data folder, or raise if another hub has it.

    Two hubs on one folder would run the same consumer groups from the same
    offsets and watch the same inboxes. The operating system drops the lock
    when the process ends, also on kill -9.
    """
    handle = (data_dir / "hub.lock").open("a+b")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().decode("ascii", "replace").strip() or "unknown"
        handle.close()
        raise PlantbusError(
            f"Another hub (process {holder}) is running with the data folder "
            f"{str(data_dir)!r}; stop it first, or give this hub its own "
            f"`hub.data_dir`."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()).encode())
    handle.flush()
    return handle


def tune_garbage_collector() -> None:
    """Make Python's cyclic garbage collector run less often, for a long-lived hub.

    Each event creates a few hundred short-lived objects, and with the default
    threshold of 700 allocations the collector runs many times per batch and
    scans every live object each time it reaches the oldest generation. The
    objects created at start-up (modules, schemas, the configuration) are
    frozen, so that the collector no longer scans them at all. In the pipeline
    benchmark this raised the end-to-end rate by a quarter or more.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _make_log(config: HubConfig) -> EventLog | None:
    """Return the JetStream log of a hub file, None for the embedded log."""
    backbone = config.backbone
    if backbone.kind != "jetstream":
        return None
    from plantbus.backbone.jetstream import JetStreamLog

    # The stream's own limits enforce the retention on the server.
    retention = backbone.retention
    return JetStreamLog(
        backbone.url,
        backbone.stream,
        backbone.partitions,
        replicas=backbone.replicas,
        duplicate_window_seconds=backbone.duplicate_window_seconds,
        max_age_seconds=(
            retention.max_age_hours * 3600 if retention.max_age_hours else None
        ),
        max_bytes=(
            int(retention.max_megabytes * 1024 * 1024)
            if retention.max_megabytes
            else None
        ),
    )


async def build_hub(config: HubConfig, catalogue: Catalogue | None = None) -> Hub:
    """Create and start the log, the state store and every part of a hub file."""
    from plantbus.backbone.sqlite import SqliteLog
    from plantbus.state.factory import make_leases, make_state_store, shares_work

    data_dir = config.hub.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    # Worker processes that share the work through partition leases may share
    # one data folder too; otherwise one hub owns it.
    lock = None if shares_work(config) else _lock_data_dir(data_dir)
    log = _make_log(config) or SqliteLog(
        data_dir / "log.sqlite",
        partitions=config.backbone.partitions,
        cache_mib=config.backbone.cache_mib,
    )
    await log.start()
    state = make_state_store(config)
    await state.start()

    catalogue = catalogue or Catalogue.load()
    allow_unknown = any(
        isinstance(s, HttpSourceConfig) and s.allow_unknown_types
        for s in config.sources
    )
    hub = Hub(
        lock=lock,
        config=config,
        log=log,
        state=state,
        catalogue=catalogue,
        ingest=Ingestor(log, catalogue, allow_unknown_types=allow_unknown),
    )

    try:
        for name, system in config.systems.items():
            hub.systems[name] = await _build_system(name, system)
        for sink_config in config.sinks:
            hub.sinks[sink_config.name] = _build_sink(sink_config, hub)
            hub.breakers[sink_config.name] = CircuitBreaker(
                sink_config.name,
                failure_threshold=sink_config.circuit.failure_threshold,
                reset_seconds=sink_config.circuit.reset_seconds,
            )
        for source_config in config.sources:
            hub.sources.append(_build_source(source_config, hub))
        hub.leases = make_leases(config)
        for pipeline_config in config.pipelines:
            hub.pipelines.append(_build_pipeline(pipeline_config, hub))
        if hub.leases is not None:
            await hub.leases.start()
    except BaseException:
        # Close what was opened, so a failed start leaves no open files or
        # sessions behind.
        await hub.close()
        raise
    return hub


async def _build_system(name: str, system: TrytonSystem) -> Any:
    from plantbus.connectors.tryton.client import TrytonClient

    client = TrytonClient(
        system.url,
        system.database,
        system.user,
        system.password,
        timeout=system.timeout_seconds,
        max_connections=system.max_connections,
    )
    try:
        await client.start()
    except DeliveryError as exc:
        await client.close()
        raise PlantbusError(
            f"System {name!r}: cannot log in to Tryton database "
            f"{system.database!r} at {system.url}: {exc} Check that trytond is "
            f"running there and that `url`, `database`, `user` and `password` "
            f"are right."
        ) from exc
    logger.info(
        "system %s: Tryton database %r at %s", name, system.database, system.url
    )
    return client


def _build_sink(config: Any, hub: Hub) -> Sink:
    if isinstance(config, MemorySinkConfig):
        from plantbus.connectors.memory import MemorySink

        return MemorySink(config.name)
    if isinstance(config, FileSinkConfig):
        from plantbus.connectors.jsonl import JsonLinesSink

        return JsonLinesSink(config.name, config.path)
    if isinstance(config, B2mmlFolderSinkConfig):
        from plantbus.connectors.b2mml_folder import B2mmlFolderSink

        return B2mmlFolderSink(config.name, config.path, config.schema_dir)
    if isinstance(config, TrytonSinkConfig):
        from plantbus.connectors.tryton.sink import TrytonSink

        return TrytonSink(config.name, hub.systems[config.system])
    if isinstance(config, RestSinkConfig):
        from plantbus.connectors.rest.sink import RestSink

        return RestSink.from_config(config)
    if isinstance(config, MqttSinkConfig):
        return _build_mqtt_sink(config, hub)
    raise ConfigError(f"Sink kind {type(config).__name__!r} is not supported.")


def _build_source(config: Any, hub: Hub) -> Source:
    if isinstance(config, HttpSourceConfig):
        return _build_http_source(config, hub)
    if isinstance(config, FolderSourceConfig):
        config.path.mkdir(parents=True, exist_ok=True)
        if config.format in ("x12", "edifact") and config.outbox is not None:
            return _build_edi_source(config)
        return _build_folder_source(config, hub)
    if isinstance(config, TrytonOrdersSourceConfig):
        from plantbus.connectors.tryton.source import TrytonOrderSource

        return TrytonOrderSource(
            config.name, hub.systems[config.system], poll_seconds=config.poll_seconds
        )
    if isinstance(config, MqttSourceConfig):
        return _build_mqtt_source(config, hub)
    if isinstance(config, OpcUaSourceConfig):
        from plantbus.connectors.opcua.source import OpcUaSource

        return OpcUaSource.from_config(config)
    if isinstance(config, MtconnectSourceConfig):
        from plantbus.connectors.mtconnect.build import build_mtconnect_source

        return build_mtconnect_source(config, hub.config.base_dir)
    raise ConfigError(f"Source kind {type(config).__name__!r} is not supported.")


def _build_http_source(config: HttpSourceConfig, hub: Hub) -> Source:
    from plantbus.admin import AdminService
    from plantbus.api.backpressure import BacklogGuard
    from plantbus.connectors.http import HttpSource

    api = hub.config.api
    http_limit = api.max_backlog_events or hub.config.backbone.max_backlog_events
    backlog_guard = None
    if http_limit is not None:
        backlog_guard = BacklogGuard(
            hub.backlog,
            http_limit,
            retry_after_seconds=api.backlog_retry_after_seconds,
        )
    return HttpSource(
        hub.catalogue,
        name=config.name,
        host=api.host,
        port=api.port,
        allow_unknown_types=config.allow_unknown_types,
        max_body_bytes=api.max_body_bytes,
        admin=AdminService(hub.state, hub.config),
        backlog_guard=backlog_guard,
    )


def _build_folder_source(config: FolderSourceConfig, hub: Hub) -> Source:
    from functools import partial

    from plantbus.connectors.files import FolderSource
    from plantbus.formats.b2mml import parse_b2mml

    if config.format in ("csv", "fixed_width") and config.layout is not None:
        from plantbus.formats.flatfile import FlatFileParser

        flat = FlatFileParser(
            config.layout,
            config.format,
            plant=config.plant,
            catalogue=hub.catalogue,
        )
        return FolderSource(
            config.name,
            config.path,
            flat,
            poll_interval=config.poll_seconds,
            content_type="text/csv" if config.format == "csv" else "text/plain",
        )
    parser = partial(_parse_b2mml, parse_b2mml, config.schema_dir, config.plant)
    return FolderSource(
        config.name, config.path, parser, poll_interval=config.poll_seconds
    )


def _mqtt_client_id(hub: Hub, connector: str) -> str:
    return f"plantbus-{hub.config.hub.name}-{connector}"


def _build_mqtt_source(config: MqttSourceConfig, hub: Hub) -> Source:
    from plantbus.connectors.mqtt.settings import resolve_paths
    from plantbus.connectors.mqtt.source import MqttSource

    return MqttSource(
        config.name,
        resolve_paths(config.broker, hub.config.base_dir),
        config.subscriptions,
        client_id=_mqtt_client_id(hub, config.name),
        max_batch=config.max_batch,
        receive_maximum=config.receive_maximum,
    )


def _build_mqtt_sink(config: MqttSinkConfig, hub: Hub) -> Sink:
    from plantbus.connectors.mqtt.settings import resolve_paths
    from plantbus.connectors.mqtt.sink import MqttSink
    from plantbus.state.factory import shares_work

    client_id = _mqtt_client_id(hub, config.name)
    if shares_work(hub.config):
        # Each worker publishes, and a shared client id would make the broker
        # drop one worker's connection whenever another connects.
        client_id = f"{client_id}-{socket.gethostname()}-{os.getpid()}"
    return MqttSink(
        config.name,
        resolve_paths(config.broker, hub.config.base_dir),
        config.topic,
        client_id=client_id,
        qos=config.qos,
        retain=config.retain,
        payload=config.payload,
    )


def _build_edi_source(config: FolderSourceConfig) -> Source:
    from functools import partial
    from urllib.parse import quote
    from zoneinfo import ZoneInfo

    from plantbus.connectors.edi import EdiFolderSource
    from plantbus.formats.edifact import read_edifact
    from plantbus.formats.x12 import read_x12

    assert config.outbox is not None
    reader = partial(
        read_x12 if config.format == "x12" else read_edifact,
        source=f"urn:plantbus:source:{quote(config.name, safe='')}",
        plant=config.plant,
        zone=ZoneInfo(config.timezone),
    )
    return EdiFolderSource(
        config.name,
        config.path,
        reader,
        standard=config.format,
        outbox=config.outbox,
        poll_interval=config.poll_seconds,
    )


def _parse_b2mml(
    parse: Any, schema_dir: Any, plant: str | None, data: bytes, name: str
) -> Any:
    return parse(data, name, schema_dir, plant)


def _build_pipeline(config: PipelineConfig, hub: Hub) -> PipelineRuntime:
    steps: list[step_kinds.Step] = []
    targets: list[str] = []
    builders: dict[type, Callable[[Any], step_kinds.Step]] = {
        ValidateStep: lambda s: step_kinds.ValidateStep(
            hub.catalogue,
            allow_unknown_types=bool(s.validate_ and s.validate_.allow_unknown_types),
        ),
        EnrichStep: lambda s: step_kinds.EnrichStep(
            s.enrich,
            _lookups(hub, s.enrich.system),
            cache_seconds=hub.config.systems[s.enrich.system].cache_seconds,
        ),
        MapStep: lambda s: step_kinds.MapStep(s.map),
        FilterStep: lambda s: step_kinds.FilterStep(s.filter),
        RouteStep: lambda s: step_kinds.RouteStep(s.route),
    }
    for step in config.steps:
        if isinstance(step, DeliverStep):
            targets = list(step.deliver.to)
            continue
        steps.append(builders[type(step)](step))

    deliverer = Deliverer(
        config.name,
        hub.sinks,
        targets,
        hub.state,
        config.retry,
        hub.stopping,
        sink_policies={
            sink.name: sink.retry for sink in hub.config.sinks if sink.retry is not None
        },
        breakers=hub.breakers,
    )
    return PipelineRuntime(
        config.name,
        hub.log,
        hub.state,
        config.types,
        steps,
        deliverer,
        max_in_flight=config.max_in_flight,
        concurrency=config.concurrency,
        park_keys=config.on_dead_letter == "park_key",
        leases=hub.leases.group(config.name) if hub.leases is not None else None,
    )


def _lookups(hub: Hub, system: str) -> step_kinds.Lookups:
    from plantbus.connectors.tryton.lookup import TrytonLookups

    return TrytonLookups(hub.systems[system])
