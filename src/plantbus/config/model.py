"""The structure of a hub file, checked by pydantic before the hub starts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator


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
    kind: Literal["embedded"] = "embedded"
    partitions: int = Field(default=16, ge=1, le=4096)
    retention: RetentionConfig = RetentionConfig()


class StateConfig(Strict):
    kind: Literal["sqlite"] = "sqlite"


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
    format: Literal["b2mml"] = "b2mml"
    schema_dir: Path
    plant: str | None = None
    poll_seconds: float = Field(default=1.0, gt=0)


class TrytonOrdersSourceConfig(Strict):
    kind: Literal["tryton_orders"]
    name: str
    system: str
    poll_seconds: float = Field(default=5.0, gt=0)


SourceConfig = Annotated[
    HttpSourceConfig | FolderSourceConfig | TrytonOrdersSourceConfig,
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


SinkConfig = Annotated[
    TrytonSinkConfig | FileSinkConfig | MemorySinkConfig,
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
