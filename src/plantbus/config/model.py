"""The structure of a hub file, checked by pydantic before the hub starts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from plantbus.formats.flatfile.layout import FlatFileLayout


class Strict(BaseModel):
    """A config section that rejects unknown keys, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid")


class HubSection(Strict):
    name: str = "plantbus"
    # Folder for the log, the state store and other files; relative to the hub file.
    data_dir: Path = Path("var")


class RetentionConfig(Strict):
    max_age_hours: float | None = Field(default=168.0, gt=0)
    max_megabytes: float | None = Field(default=None, gt=0)


class BackboneConfig(Strict):
    # embedded: SQLite file in data_dir; jetstream: NATS JetStream stream.
    kind: Literal["embedded", "jetstream"] = "embedded"
    partitions: int = Field(default=16, ge=1, le=4096)
    # JetStream only: comma-separated server URLs, the stream name (also the
    # first subject token), copies of each record, and the seconds for which
    # the stream drops an event id it has already stored.
    url: str = "nats://127.0.0.1:4222"
    stream: str = Field(default="plantbus", pattern=r"^[A-Za-z0-9_-]+$")
    replicas: int = Field(default=1, ge=1, le=5)
    duplicate_window_seconds: float = Field(default=3600.0, gt=0)
    retention: RetentionConfig = RetentionConfig()
    # Sources that can wait (folders, polling) pause while the slowest
    # pipeline has more than this many events left to deliver, and HTTP ingest
    # responds with 503 unless `api.max_backlog_events` sets its own limit.
    # None: no limit.
    max_backlog_events: int | None = Field(default=None, ge=1)
    # Embedded only: the page cache of each of the log's two SQLite
    # connections, in MiB. While a backlog builds, the caches fill, so the
    # log's memory grows up to twice this and then stays there.
    cache_mib: int = Field(default=64, ge=1, le=65536)


class StateConfig(Strict):
    # sqlite: state.sqlite in data_dir, for one process. postgres: a database
    # that several worker processes share; it also stores their partition leases.
    kind: Literal["sqlite", "postgres"] = "sqlite"
    # libpq connection string or URI, such as
    # postgresql://plantbus:${PGPASSWORD}@db1:5432/plantbus
    dsn: str | None = None
    # PostgreSQL schema for the tables; created on start when missing.
    schema_name: str = Field(default="public", pattern=r"^[a-z_][a-z0-9_]*$")
    # Size of each process's connection pool.
    max_connections: int = Field(default=8, ge=1)

    @model_validator(mode="after")
    def _dsn_for_postgres(self) -> StateConfig:
        if self.kind == "postgres" and not self.dsn:
            raise ValueError(
                "`state.dsn` is missing: a postgres state store needs a connection "
                "string such as postgresql://plantbus@127.0.0.1:5432/plantbus"
            )
        if self.kind == "sqlite" and self.dsn is not None:
            raise ValueError(
                "`state.dsn` is set but `state.kind` is 'sqlite': remove `dsn`, or "
                "set `kind: postgres`"
            )
        return self


class ApiConfig(Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    # Respond 503 to new events while the slowest pipeline has more than this
    # many events left to deliver; None: no limit.
    max_backlog_events: int | None = Field(default=None, ge=1)
    backlog_retry_after_seconds: int = Field(default=5, ge=1)


class TrytonSystem(Strict):
    kind: Literal["tryton"]
    # Base URL of the trytond server, such as http://127.0.0.1:8000
    url: str
    database: str
    user: str = "admin"
    password: str
    timeout_seconds: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=8, ge=1)
    cache_seconds: float = Field(default=300.0, ge=0)


SystemConfig = Annotated[TrytonSystem, Field(discriminator="kind")]


class HttpSourceConfig(Strict):
    kind: Literal["http"]
    name: str
    allow_unknown_types: bool = False


class FolderSourceConfig(Strict):
    kind: Literal["folder"]
    name: str
    path: Path
    format: Literal["b2mml", "csv", "fixed_width", "x12", "edifact"] = "b2mml"
    # Folder of the B2MML XSDs; required for format b2mml.
    schema_dir: Path | None = None
    # How the lines of a csv or fixed_width file become events.
    layout: FlatFileLayout | None = None
    plant: str | None = None
    poll_seconds: float = Field(default=1.0, gt=0)
    # Folder that x12 and edifact acknowledgements (997, TA1, CONTRL) go to.
    outbox: Path | None = None
    # IANA time zone of EDI dates that carry none, such as Europe/Berlin.
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _format_options(self) -> FolderSourceConfig:
        if self.format == "b2mml" and self.schema_dir is None:
            raise ValueError("format b2mml needs `schema_dir`, the folder of the XSDs")
        if self.format in ("csv", "fixed_width") and self.layout is None:
            raise ValueError(f"format {self.format} needs a `layout` block")
        if self.format in ("x12", "edifact") and self.outbox is None:
            raise ValueError(
                f"format {self.format} needs `outbox`, the folder for the "
                "acknowledgements sent back to the supplier"
            )
        return self

    @field_validator("timezone")
    @classmethod
    def _known_time_zone(cls, timezone: str) -> str:
        # A field validator, so that the error names the `timezone` key.
        _check_time_zone(timezone)
        return timezone


def _check_time_zone(name: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"timezone {name!r} is not a known IANA time zone; use a name such "
            "as 'UTC' or 'Europe/Berlin'"
        ) from None


class TrytonOrdersSourceConfig(Strict):
    kind: Literal["tryton_orders"]
    name: str
    system: str
    poll_seconds: float = Field(default=5.0, gt=0)


class MqttTlsConfig(Strict):
    # CA certificates (PEM) that the broker's certificate must chain to; by
    # default the system's trusted CAs.
    ca_file: Path | None = None
    # Client certificate and its private key (PEM), for brokers that require one.
    cert_file: Path | None = None
    key_file: Path | None = None
    # Skip the check that the broker's certificate names `host`; the chain is
    # still checked against the CAs.
    insecure: bool = False

    @model_validator(mode="after")
    def _cert_and_key(self) -> MqttTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give both `cert_file` and `key_file`, or neither")
        return self


class MqttBrokerConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    # MQTT protocol version: "5" or "3.1.1".
    protocol: Literal["5", "3.1.1"] = "5"
    # Fixed client id; a source needs one for its persistent session. By
    # default plantbus-<hub name>-<source or sink name>.
    client_id: str | None = Field(default=None, min_length=1, max_length=128)
    username: str | None = None
    password: str | None = None
    tls: MqttTlsConfig | None = None
    keepalive_seconds: int = Field(default=60, ge=1, le=65535)
    # MQTT 5: how long the broker keeps a source's session and queued messages
    # after the connection drops.
    session_expiry_seconds: int = Field(default=7 * 24 * 3600, ge=0, le=4294967295)
    # Seconds to wait for the broker to acknowledge a connect, subscribe or publish.
    timeout_seconds: float = Field(default=10.0, gt=0)
    # Wait between reconnect attempts: doubles from initial to max, with jitter.
    reconnect_initial_seconds: float = Field(default=0.5, gt=0)
    reconnect_max_seconds: float = Field(default=30.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _protocol_as_text(cls, value: Any) -> Any:
        # YAML reads `protocol: 5` as a number.
        if isinstance(value, dict) and isinstance(value.get("protocol"), int):
            return {**value, "protocol": str(value["protocol"])}
        return value


class MqttSubscriptionConfig(Strict):
    # MQTT topic filter with + and # wildcards, such as plant1/+/telemetry.
    filter: str = Field(min_length=1)
    qos: int = Field(default=1, ge=0, le=2)
    # json: the payload is the event's data; cloudevents: the payload is a
    # structured CloudEvent; sparkplug: Sparkplug B protobuf.
    format: Literal["json", "cloudevents", "sparkplug"] = "json"
    # Event type of json messages.
    type: str | None = None
    # Partition key: a JSONata expression on {topic, segments, payload,
    # properties}, such as segments[1], or the index of a topic segment.
    key: str | None = None
    key_segment: int | None = Field(default=None, ge=0)
    # JSONata expression for the event data; by default the whole payload.
    data: str | None = None
    # Sparkplug: machine id templates for node and device messages.
    node_machine_id: str = "{node}"
    device_machine_id: str = "{device}"
    # Sparkplug: metric whose value shows whether the machine runs; its
    # changes become machine up and down events.
    state_metric: str | None = None
    running_values: list[str] = ["true", "1"]
    # Sparkplug: publish an NCMD rebirth request on a sequence gap or an
    # unknown alias, at most once per interval per edge node.
    request_rebirth: bool = True
    rebirth_interval_seconds: float = Field(default=5.0, ge=0)

    @model_validator(mode="after")
    def _format_options(self) -> MqttSubscriptionConfig:
        if self.format == "json" and not self.type:
            raise ValueError("a json subscription needs an event `type`")
        if self.key is not None and self.key_segment is not None:
            raise ValueError("give `key` or `key_segment`, not both")
        json_options = (self.type, self.key, self.key_segment, self.data)
        if self.format != "json" and any(o is not None for o in json_options):
            raise ValueError(
                f"`type`, `key`, `key_segment` and `data` apply to json "
                f"subscriptions only; {self.format} messages carry their own"
            )
        return self


class MqttSourceConfig(Strict):
    kind: Literal["mqtt"]
    name: str
    broker: MqttBrokerConfig = MqttBrokerConfig()
    subscriptions: list[MqttSubscriptionConfig] = Field(min_length=1)
    # Messages appended to the log in one transaction, at most.
    max_batch: int = Field(default=500, ge=1)
    # MQTT 5: messages at QoS 1 and 2 that the broker may send before plantbus
    # acknowledges them (Receive Maximum). On either protocol, the source stops
    # reading while this many messages wait to be appended.
    receive_maximum: int = Field(default=1000, ge=1, le=65535)


class OpcUaRule(Strict):
    # Value that the rule matches: a data change's value, or an event's
    # Message text; compared as JSON values, so `true` matches a Boolean.
    when: Any
    # Event type that a matching notification becomes.
    type: str


class OpcUaNodeConfig(Strict):
    # Node id such as ns=2;s=Press4.Running or ns=2;i=1001; for events the
    # node that emits them, often the Server object i=2253.
    node_id: str
    subscribe: Literal["data_change", "event"] = "data_change"
    # Machine the node belongs to; also the partition key of its events.
    machine_id: str = Field(min_length=1)
    work_center: str | None = None
    # Event type of every notification; give either `type` or `rules`.
    type: str | None = None
    rules: list[OpcUaRule] = []
    # JSONata expression for the event data, instead of the built-in data of
    # the event type. Its input has value, previous, node_id, machine_id,
    # work_center, source_timestamp and, for events, fields.
    map: str | None = None
    # Event subscriptions: node id of the OPC UA event type to receive, whose
    # fields are selected; by default BaseEventType (i=2041), that is all.
    ua_event_type: str | None = None

    @model_validator(mode="after")
    def _type_or_rules(self) -> OpcUaNodeConfig:
        if (self.type is None) == (not self.rules):
            raise ValueError("give exactly one of `type` or `rules`")
        return self


class OpcUaSourceConfig(Strict):
    kind: Literal["opcua"]
    name: str
    # Server endpoint URL such as opc.tcp://127.0.0.1:4840/
    endpoint: str
    username: str | None = None
    password: str | None = None
    # asyncua security string: Policy,Mode,certificate,private_key[,server_cert],
    # such as Basic256Sha256,SignAndEncrypt,client.der,client.pem
    security: str | None = None
    # Milliseconds between the server's notification messages.
    publishing_interval_ms: int = Field(default=500, ge=10)
    # Seconds that each request to the server may take.
    timeout_seconds: float = Field(default=10.0, gt=0)
    reconnect_initial_seconds: float = Field(default=0.5, gt=0)
    reconnect_max_seconds: float = Field(default=30.0, gt=0)
    nodes: list[OpcUaNodeConfig] = Field(min_length=1)


class MtconnectSourceConfig(Strict):
    kind: Literal["mtconnect"]
    name: str
    # agent: poll an agent's HTTP interface; shdr: read an adapter's TCP stream.
    mode: Literal["agent", "shdr"]
    # Agent base URL such as http://127.0.0.1:5000 (agent mode).
    url: str | None = None
    # Adapter address (shdr mode).
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=1, le=65535)
    # MTConnectDevices XML (Devices.xml) that defines the data items; relative
    # to the hub file. SHDR needs it, or `data_items`, to find conditions.
    devices_file: Path | None = None
    # Device of the SHDR stream (name or uuid), or the only device an agent
    # source reads.
    device: str | None = None
    # SHDR data item name to MTConnect type (EXECUTION, PART_COUNT,
    # AVAILABILITY, CONDITION...), added to or replacing the devices file.
    data_items: dict[str, str] = {}
    # MTConnect device name to plantbus machine id; by default the device name.
    machine_ids: dict[str, str] = {}
    work_centers: dict[str, str] = {}
    # Maximum observations per /sample request (agent mode).
    count: int = Field(default=1000, ge=1)
    poll_seconds: float = Field(default=1.0, gt=0)
    timeout_seconds: float = Field(default=30.0, gt=0)
    reconnect_initial_seconds: float = Field(default=0.5, gt=0)
    reconnect_max_seconds: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _mode_options(self) -> MtconnectSourceConfig:
        if self.mode == "agent" and not self.url:
            raise ValueError("mode `agent` needs the agent's `url`")
        if self.mode == "shdr" and self.port is None:
            raise ValueError("mode `shdr` needs the adapter's `port`")
        if self.mode == "shdr" and not (self.device or self.devices_file):
            raise ValueError("mode `shdr` needs `device` or `devices_file`")
        return self


SourceConfig = Annotated[
    HttpSourceConfig
    | FolderSourceConfig
    | TrytonOrdersSourceConfig
    | MqttSourceConfig
    | OpcUaSourceConfig
    | MtconnectSourceConfig,
    Field(discriminator="kind"),
]


class RetryConfig(Strict):
    max_attempts: int = Field(default=5, ge=1)
    # Give up once the first attempt is this many seconds old; None: no limit.
    max_age_seconds: float | None = Field(default=None, gt=0)
    initial_seconds: float = Field(default=0.5, ge=0)
    max_seconds: float = Field(default=30.0, ge=0)
    multiplier: float = Field(default=2.0, ge=1)
    # Share of each wait drawn at random, so that retries of many events spread out.
    jitter: float = Field(default=0.2, ge=0, le=1)
    # Regular expressions on the error message that override the sink's own
    # classification: matching errors are final, or are retried.
    permanent_errors: list[str] = []
    retryable_errors: list[str] = []

    @model_validator(mode="after")
    def _patterns_compile(self) -> RetryConfig:
        for pattern in (*self.permanent_errors, *self.retryable_errors):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"{pattern!r} is not a valid regular expression: {exc}"
                ) from exc
        return self


class CircuitConfig(Strict):
    # Retryable failures in a row that open the circuit of a sink.
    failure_threshold: int = Field(default=5, ge=1)
    # Seconds an open circuit waits before it lets one probe delivery through.
    reset_seconds: float = Field(default=30.0, gt=0)


class SinkBase(Strict):
    name: str
    # Retry policy for this sink; by default the pipeline's.
    retry: RetryConfig | None = None
    circuit: CircuitConfig = CircuitConfig()


class TrytonSinkConfig(SinkBase):
    kind: Literal["tryton"]
    system: str


class FileSinkConfig(SinkBase):
    kind: Literal["file"]
    # JSON Lines file that each delivered event is appended to.
    path: Path


class MemorySinkConfig(SinkBase):
    kind: Literal["memory"]


class B2mmlFolderSinkConfig(SinkBase):
    kind: Literal["b2mml_folder"]
    # Folder that receives one B2MML V0600 ProductionSchedule file per released
    # order, named after the event id.
    path: Path
    # B2MML schema folder; when set, each document is validated against the
    # V0600 ProductionSchedule XSD before it is written.
    schema_dir: Path | None = None


class OAuth2ClientCredentialsAuth(Strict):
    kind: Literal["oauth2_client_credentials"]
    token_url: str = Field(pattern=r"^https?://")
    client_id: str
    client_secret: str
    scope: str | None = None
    # Fetch a new token this many seconds before the current one expires.
    refresh_margin_seconds: float = Field(default=30.0, ge=0)


class ApiKeyAuth(Strict):
    kind: Literal["api_key"]
    # Header name, or query parameter name when `location` is query.
    name: str = "X-API-Key"
    value: str
    location: Literal["header", "query"] = "header"


class BearerAuth(Strict):
    kind: Literal["bearer"]
    token: str


RestAuthConfig = Annotated[
    OAuth2ClientCredentialsAuth | ApiKeyAuth | BearerAuth,
    Field(discriminator="kind"),
]


class RestSinkConfig(SinkBase):
    kind: Literal["rest"]
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    # URL with {expression} placeholders that JSONata fills from the event,
    # such as http://127.0.0.1:9000/api/orders/{data.work_order_id}/confirmations
    url: str = Field(pattern=r"^https?://")
    # Header values are templates of the same form as `url`.
    headers: dict[str, str] = {}
    # JSONata mapping spec that builds the JSON body; by default the event's data.
    body: str | dict[str, Any] | None = None
    # JSONata expression for the Idempotency-Key header; by default the event id.
    idempotency_key: str | None = None
    idempotency_header: str = "Idempotency-Key"
    # JSONata expression on the JSON response body for the target's reference;
    # when it yields nothing, the Location header is the reference.
    reference: str = "id"
    auth: RestAuthConfig | None = None
    # Size of the sink's connection pool to the target.
    max_connections: int = Field(default=8, ge=1)
    timeout_seconds: float = Field(default=30.0, gt=0)


class MqttSinkConfig(SinkBase):
    kind: Literal["mqtt"]
    broker: MqttBrokerConfig = MqttBrokerConfig()
    # Topic with placeholders {type}, {key}, {subject}, {source}, {plant}, {id},
    # such as plant1/events/{type}/{key}.
    topic: str = Field(min_length=1)
    qos: int = Field(default=1, ge=0, le=2)
    retain: bool = False
    # cloudevents: the structured CloudEvent as JSON; data: only the event's
    # data as JSON, with the attributes as MQTT 5 user properties.
    payload: Literal["cloudevents", "data"] = "cloudevents"


SinkConfig = Annotated[
    TrytonSinkConfig
    | FileSinkConfig
    | MemorySinkConfig
    | B2mmlFolderSinkConfig
    | RestSinkConfig
    | MqttSinkConfig,
    Field(discriminator="kind"),
]


class ValidateOptions(Strict):
    # Accept types outside the catalogue instead of sending them to dead letters.
    allow_unknown_types: bool = False


class ValidateStep(Strict):
    validate_: ValidateOptions | None = Field(alias="validate")


class EnrichOptions(Strict):
    system: str
    lookup: Literal["item", "bom", "routing", "work_center", "location"]
    # JSONata expression for the look-up key, such as data.item
    key: str
    # Name of the binding that later expressions read, as $name.
    into: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    required: bool = False


class EnrichStep(Strict):
    enrich: EnrichOptions


class MapOptions(Strict):
    # Either one expression for the whole new data, or one per output field.
    expression: str | None = None
    fields: dict[str, Any] | None = None
    # New event type for the mapped event; by default the type stays.
    type: str | None = None

    @model_validator(mode="after")
    def _one_form(self) -> MapOptions:
        if (self.expression is None) == (self.fields is None):
            raise ValueError("give exactly one of `expression` or `fields`")
        return self


class MapStep(Strict):
    map: MapOptions


class FilterStep(Strict):
    # JSONata condition; events for which it is false or undefined are dropped.
    filter: str


class RouteRule(Strict):
    when: str | None = None
    types: list[str] | None = None
    to: list[str]


class RouteStep(Strict):
    route: list[RouteRule] = Field(min_length=1)


class DeliverOptions(Strict):
    # Sinks to deliver to; empty means the sinks chosen by an earlier route step.
    to: list[str] = []


class DeliverStep(Strict):
    deliver: DeliverOptions


STEP_KINDS = ("validate", "enrich", "map", "filter", "route", "deliver")


def _step_kind(value: Any) -> str | None:
    """Return the kind of a step written as a one-key mapping, like `map: {...}`."""
    if isinstance(value, dict) and len(value) == 1:
        kind = next(iter(value))
        return kind if kind in STEP_KINDS else None
    if isinstance(value, BaseModel):
        return next(iter(type(value).model_fields))
    return None


StepConfig = Annotated[
    Annotated[ValidateStep, Tag("validate")]
    | Annotated[EnrichStep, Tag("enrich")]
    | Annotated[MapStep, Tag("map")]
    | Annotated[FilterStep, Tag("filter")]
    | Annotated[RouteStep, Tag("route")]
    | Annotated[DeliverStep, Tag("deliver")],
    Discriminator(
        _step_kind,
        custom_error_type="invalid_step",
        custom_error_message=(
            "a step is a mapping with exactly one key, one of: " + ", ".join(STEP_KINDS)
        ),
    ),
]


class PipelineConfig(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    # Event type patterns with * wildcards, such as production.workorder.*
    types: list[str] = ["*"]
    max_in_flight: int = Field(default=1000, ge=1)
    # After a dead letter, hold the key's later events back until it is
    # redriven or discarded (park_key), or let them go on (continue).
    on_dead_letter: Literal["park_key", "continue"] = "park_key"
    # How many partition keys are processed at the same time.
    concurrency: int = Field(default=64, ge=1)
    retry: RetryConfig = RetryConfig()
    steps: list[StepConfig] = Field(min_length=1)


class HubConfig(Strict):
    """The whole hub file."""

    hub: HubSection = HubSection()
    backbone: BackboneConfig = BackboneConfig()
    state: StateConfig = StateConfig()
    api: ApiConfig = ApiConfig()
    systems: dict[str, SystemConfig] = {}
    sources: list[SourceConfig] = []
    sinks: list[SinkConfig] = []
    pipelines: list[PipelineConfig] = []
    # Folder of the hub file; relative paths in the file are resolved against it.
    base_dir: Path = Path(".")
