"""Prometheus metrics of the hub, served at `/metrics` by the API."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_INGESTED = Counter(
    "plantbus_events_ingested_total",
    "Events appended to the log, by type; duplicates are not counted.",
    ["type"],
)
INGEST_REJECTED = Counter(
    "plantbus_ingest_rejected_total",
    "Inputs that sources rejected or stored as dead letters, by source.",
    ["source"],
)
DELIVERIES = Counter(
    "plantbus_deliveries_total",
    "Deliveries by pipeline, sink and outcome (delivered, skipped, retried, dead).",
    ["pipeline", "sink", "outcome"],
)
STEP_FAILURES = Counter(
    "plantbus_step_failures_total",
    "Pipeline step failures by pipeline and step.",
    ["pipeline", "step"],
)
DELIVERY_LATENCY = Histogram(
    "plantbus_delivery_latency_seconds",
    "Seconds from append to the log until the sink confirmed delivery.",
    ["pipeline", "sink"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
CONSUMER_LAG = Gauge(
    "plantbus_consumer_lag_events",
    "Records in the log that a pipeline's consumer group has not committed.",
    ["pipeline"],
)
DEAD_LETTERS = Counter(
    "plantbus_dead_letters_total",
    "Dead letters stored, by stage.",
    ["stage"],
)
CIRCUIT_STATE = Gauge(
    "plantbus_circuit_state",
    "Circuit breaker state per sink: 0 closed, 1 half-open (probing), 2 open.",
    ["sink"],
)
