"""Sparkplug B payloads: decoding, metric values as text, and encoding commands."""

from __future__ import annotations

import base64
import math
import struct
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

from plantbus.errors import FormatError, FormatProblem
from plantbus.formats.sparkplug.descriptor import (
    DATA_TYPE_NAMES,
    DATA_TYPES,
    SIMPLE_VALUES,
    Payload,
    build_file_descriptor,
)

__all__ = [
    "DATA_TYPES",
    "DATA_TYPE_NAMES",
    "Payload",
    "build_file_descriptor",
    "decode_payload",
    "encode_rebirth_request",
    "metric_value",
    "payload_to_dict",
    "property_text",
]

_SIMPLE_VALUE_NAMES = frozenset(name for name, _ in SIMPLE_VALUES)


def decode_payload(data: bytes, topic: str) -> Any:
    """Parse a Sparkplug B payload; raise FormatError when the bytes are not one."""
    message = Payload()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise FormatError(
            topic,
            [
                FormatProblem(
                    "payload",
                    f"{len(data)} bytes are not a Sparkplug B protobuf payload "
                    f"({exc}); check that the publisher uses Sparkplug B encoding.",
                )
            ],
        ) from exc
    return message


def metric_value(metric: Any) -> str | bool | None:
    """Return a metric's value for an event: decimal string, text or boolean.

    Returns None for a null metric and for kinds that have no scalar form
    (DataSet, Template, Bytes, File and the array types).
    """
    kind = metric.WhichOneof("value")
    if metric.is_null or kind is None:
        return None
    datatype = metric.datatype
    raw = getattr(metric, kind)
    if kind == "boolean_value":
        return bool(raw)
    if kind == "string_value":
        return str(raw)
    if kind in ("int_value", "long_value"):
        return _integer(int(raw), datatype)
    if kind == "float_value":
        return _float32_text(float(raw))
    if kind == "double_value":
        return _decimal_text(float(raw))
    return None


def _integer(raw: int, datatype: int) -> str:
    # Signed Sparkplug integers travel as two's complement in uint32/uint64.
    if datatype == DATA_TYPES["DateTime"]:
        moment = datetime.fromtimestamp(raw / 1000, UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    bits = {
        DATA_TYPES["Int8"]: 8,
        DATA_TYPES["Int16"]: 16,
        DATA_TYPES["Int32"]: 32,
        DATA_TYPES["Int64"]: 64,
    }.get(datatype)
    if bits is not None:
        raw &= (1 << bits) - 1
        if raw >= 1 << (bits - 1):
            raw -= 1 << bits
    return str(raw)


def _float32_text(value: float) -> str:
    """Return the shortest decimal string that reads back as the same float32."""
    if not math.isfinite(value):
        return _decimal_text(value)
    packed = struct.pack("<f", value)
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if struct.pack("<f", float(text)) == packed:
            return _decimal_text(float(text))
    return _decimal_text(value)


def _decimal_text(value: float) -> str:
    # NOTE: NaN and the infinities have no decimal form; they are passed on as
    # the strings "NaN", "Infinity" and "-Infinity".
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def property_text(properties: Any, key: str) -> str | None:
    """Return the string value of one key of a metric's PropertySet, if present."""
    for name, value in zip(properties.keys, properties.values, strict=False):
        if name == key and value.WhichOneof("value") == "string_value":
            return str(value.string_value)
    return None


def payload_to_dict(payload: Any) -> dict[str, Any]:
    """Return a payload in the JSON form of the Tahu `sparkplug_b.json` schema.

    Covers timestamp, seq, uuid, body and the scalar fields of each metric;
    DataSet and Template values are left out.
    """
    document: dict[str, Any] = {}
    for name in ("timestamp", "seq", "uuid"):
        if payload.HasField(name):
            document[name] = getattr(payload, name)
    if payload.HasField("body"):
        document["body"] = base64.b64encode(payload.body).decode("ascii")
    metrics = []
    for metric in payload.metrics:
        item: dict[str, Any] = {}
        for source, target in (
            ("name", "name"),
            ("alias", "alias"),
            ("timestamp", "timestamp"),
            ("datatype", "datatype"),
            ("is_historical", "isHistorical"),
            ("is_transient", "isTransient"),
        ):
            if metric.HasField(source):
                item[target] = getattr(metric, source)
        kind = metric.WhichOneof("value")
        if kind in _SIMPLE_VALUE_NAMES:
            item["value"] = getattr(metric, kind)
        elif metric.is_null:
            item["value"] = None
        metrics.append(item)
    document["metrics"] = metrics
    return document


REBIRTH_METRIC = "Node Control/Rebirth"


def encode_rebirth_request(timestamp_ms: int) -> bytes:
    """Encode the NCMD payload that requests new births from an edge node."""
    payload = Payload()
    payload.timestamp = timestamp_ms
    metric = payload.metrics.add()
    metric.name = REBIRTH_METRIC
    metric.timestamp = timestamp_ms
    metric.datatype = DATA_TYPES["Boolean"]
    metric.boolean_value = True
    return bytes(payload.SerializeToString())
