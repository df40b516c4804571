"""Run the start-up checks of sources and sinks while a hub file is checked.

Sources and sinks compile their JSONata expressions, topic filters, templates
and layouts when the hub builds them. The same checks run here, so that
`plantbus check` rejects every hub file that `plantbus run` would reject at
start, and names the key of the bad value.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from functools import partial
from pathlib import Path

from plantbus.config.model import (
    FolderSourceConfig,
    HubConfig,
    MqttBrokerConfig,
    MqttSinkConfig,
    MqttSourceConfig,
    MqttSubscriptionConfig,
    MtconnectSourceConfig,
    OpcUaSourceConfig,
    RestSinkConfig,
)
from plantbus.config.yaml_lines import Location
from plantbus.errors import ConfigError

# Records one problem: the key path of the bad value and a sentence about it.
Problem = Callable[[Location, str], None]

# Placeholders of the Sparkplug machine id templates.
_SPARKPLUG_FIELDS = ("group", "node", "device")
# An HTTP field name: a token as RFC 9110 section 5.6.2 defines it.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# URL schemes of NATS servers that nats-py connects to.
_NATS_SCHEMES = ("nats", "tls", "ws", "wss")


def check_connectors(config: HubConfig, problem: Problem) -> None:
    """Build the compiled parts of each source and sink, and report each failure."""
    _check_services(config, problem)
    for index, sink in enumerate(config.sinks):
        where: Location = ("sinks", index)
        if isinstance(sink, RestSinkConfig):
            _check_rest_sink(sink, where, problem)
        elif isinstance(sink, MqttSinkConfig):
            _check_mqtt_sink(sink, config.base_dir, where, problem)
    for index, source in enumerate(config.sources):
        where = ("sources", index)
        if isinstance(source, MqttSourceConfig):
            _check_mqtt_source(source, config.base_dir, where, problem)
        elif isinstance(source, OpcUaSourceConfig):
            _check_opcua_source(source, where, problem)
        elif isinstance(source, MtconnectSourceConfig):
            _check_mtconnect_source(source, config.base_dir, where, problem)
        elif isinstance(source, FolderSourceConfig):
            _check_schema_dir(source, config.base_dir, where, problem)
            _check_flat_layout(source, where, problem)


def _check_services(config: HubConfig, problem: Problem) -> None:
    """Parse the JetStream server URLs and the PostgreSQL connection string."""
    from urllib.parse import urlsplit

    if config.backbone.kind == "jetstream":
        for url in config.backbone.url.split(","):
            # nats-py reads a URL without a scheme, such as host:4222, as nats://.
            text = url.strip()
            parts = urlsplit(text if "://" in text else f"nats://{text}")
            try:
                port = parts.port
            except ValueError:
                port = -1
            if parts.scheme not in _NATS_SCHEMES or not parts.hostname or port == -1:
                problem(
                    ("backbone", "url"),
                    f"the server URL {text!r} is invalid: expected "
                    f"nats://host:port (or tls://, ws://, wss://), several "
                    f"separated by commas",
                )
    if config.state.kind == "postgres" and config.state.dsn:
        from psycopg import ProgrammingError
        from psycopg.conninfo import conninfo_to_dict

        try:
            conninfo_to_dict(config.state.dsn)
        except ProgrammingError as exc:
            # The message leaves the connection string out, since it may contain
            # a password; psycopg's own text may still quote one word of it.
            problem(
                ("state", "dsn"),
                f"the connection string is invalid: {str(exc).strip()}; write it as "
                f"postgresql://user@host:5432/database or as key=value pairs",
            )


def _attempt(problem: Problem, where: Location, build: Callable[[], object]) -> None:
    try:
        build()
    except ConfigError as exc:
        problem(where, str(exc))


def _check_rest_sink(sink: RestSinkConfig, where: Location, problem: Problem) -> None:
    from plantbus.connectors.rest.sink import Template
    from plantbus.pipeline.mapping import Mapping, compile_expression

    _attempt(problem, (*where, "url"), lambda: Template(sink.url, url=True))
    names = [((*where, "headers", name), name) for name in sink.headers]
    names.append(((*where, "idempotency_header"), sink.idempotency_header))
    for at, name in names:
        if not _TOKEN.fullmatch(name):
            problem(
                at,
                f"the header name {name!r} is invalid: an HTTP field name is a "
                f"token of letters, digits and !#$%&'*+-.^_`|~",
            )
    for header, value in sink.headers.items():
        _attempt(
            problem, (*where, "headers", header), partial(Template, value, url=False)
        )
    if sink.body is not None:
        body = sink.body
        _attempt(problem, (*where, "body"), lambda: Mapping(body))
    if sink.idempotency_key:
        key = sink.idempotency_key
        _attempt(problem, (*where, "idempotency_key"), lambda: compile_expression(key))
    _attempt(problem, (*where, "reference"), lambda: compile_expression(sink.reference))


def _check_mqtt_broker(
    broker: MqttBrokerConfig, base_dir: Path, where: Location, problem: Problem
) -> None:
    if broker.tls is None:
        return
    from plantbus.connectors.mqtt.settings import resolve_paths, tls_context

    resolved = resolve_paths(broker, base_dir)
    _attempt(problem, (*where, "broker", "tls"), lambda: tls_context(resolved))


def _check_mqtt_sink(
    sink: MqttSinkConfig, base_dir: Path, where: Location, problem: Problem
) -> None:
    from plantbus.connectors.mqtt.sink import topic_fields

    _check_mqtt_broker(sink.broker, base_dir, where, problem)
    _attempt(problem, (*where, "topic"), lambda: topic_fields(sink.name, sink.topic))


def _check_mqtt_source(
    source: MqttSourceConfig, base_dir: Path, where: Location, problem: Problem
) -> None:
    from plantbus.connectors.mqtt.messages import check_filter
    from plantbus.pipeline.mapping import compile_expression

    _check_mqtt_broker(source.broker, base_dir, where, problem)
    for index, subscription in enumerate(source.subscriptions):
        at: Location = (*where, "subscriptions", index)
        _attempt(
            problem,
            (*at, "filter"),
            partial(check_filter, subscription.filter, source.name),
        )
        for key in ("key", "data"):
            text = getattr(subscription, key)
            if text is not None:
                _attempt(problem, (*at, key), partial(compile_expression, text))
        if subscription.format == "sparkplug":
            _check_machine_id_templates(subscription, at, problem)


def _check_machine_id_templates(
    subscription: MqttSubscriptionConfig, where: Location, problem: Problem
) -> None:
    """Check that the Sparkplug machine id templates use known placeholders only."""
    for key in ("node_machine_id", "device_machine_id"):
        template: str = getattr(subscription, key)
        try:
            fields = [
                (field, spec, conversion)
                for _, field, spec, conversion in string.Formatter().parse(template)
                if field is not None
            ]
        except ValueError as exc:
            problem(
                (*where, key),
                f"the template {template!r} is invalid: {exc}. Write placeholders "
                f"as {{node}}, and double braces for a literal brace.",
            )
            continue
        for field, spec, conversion in fields:
            if field not in _SPARKPLUG_FIELDS or spec or conversion:
                problem(
                    (*where, key),
                    f"the template {template!r} has the placeholder {{{field}}}, "
                    f"which is unknown; use {{group}}, {{node}} or {{device}}.",
                )
                break
        if key == "node_machine_id" and "{device}" in template:
            problem(
                (*where, key),
                f"the template {template!r} uses {{device}}, but node messages "
                f"have no device; use {{group}} and {{node}} only.",
            )


def _check_opcua_source(
    source: OpcUaSourceConfig, where: Location, problem: Problem
) -> None:
    from plantbus.connectors.opcua.mapping import NodeMapper
    from plantbus.connectors.opcua.source import _node_id as node_id

    for index, node in enumerate(source.nodes):
        at: Location = (*where, "nodes", index)
        _attempt(problem, (*at, "node_id"), partial(node_id, node.node_id, source.name))
        if node.ua_event_type is not None:
            _attempt(
                problem,
                (*at, "ua_event_type"),
                partial(node_id, node.ua_event_type, source.name),
            )
        key = "rules"
        if node.map is not None:
            key = "map"
        elif node.type:
            key = "type"
        _attempt(problem, (*at, key), partial(NodeMapper, source.name, node))


def _check_mtconnect_source(
    source: MtconnectSourceConfig, base_dir: Path, where: Location, problem: Problem
) -> None:
    if source.devices_file is None:
        return
    from plantbus.connectors.mtconnect.devices import read_devices, select_device

    path = (base_dir / source.devices_file).resolve()
    _attempt(
        problem,
        (*where, "devices_file"),
        lambda: select_device(read_devices(path), source.device, path),
    )


def _check_schema_dir(
    source: FolderSourceConfig, base_dir: Path, where: Location, problem: Problem
) -> None:
    if source.format != "b2mml" or source.schema_dir is None:
        return
    folder = (base_dir / source.schema_dir).resolve()
    if not folder.is_dir():
        problem(
            (*where, "schema_dir"),
            f"{str(folder)!r} is not a folder: give the folder of the official "
            "B2MML XSDs, with one subfolder per version such as V0600",
        )


def _check_flat_layout(
    source: FolderSourceConfig, where: Location, problem: Problem
) -> None:
    if source.format not in ("csv", "fixed_width") or source.layout is None:
        return
    from plantbus.formats.flatfile import FlatFileParser

    layout, format = source.layout, source.format
    _attempt(problem, (*where, "layout"), lambda: FlatFileParser(layout, format))
