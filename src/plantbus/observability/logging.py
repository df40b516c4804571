"""Structured logging: one line per record, with event and correlation ids."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import structlog

# Keys that callers put into `extra` and that belong in the rendered line.
_CONTEXT_KEYS = (
    "event_id",
    "correlation_id",
    "sink",
    "stage",
    "dead_letter_id",
    "error",
    "pipeline",
    "source",
)


def _copy_extra(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    record = event_dict.get("_record")
    if isinstance(record, logging.LogRecord):
        for key in _CONTEXT_KEYS:
            if key in record.__dict__:
                event_dict[key] = record.__dict__[key]
    return event_dict


def configure_logging(level: int = logging.INFO) -> None:
    """Send plantbus logs to stderr as key=value lines through structlog."""
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=[
            _copy_extra,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
    )
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger("plantbus")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
