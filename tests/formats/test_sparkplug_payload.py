"""The Sparkplug B descriptor against the Eclipse Tahu .proto and JSON schema."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from plantbus.errors import FormatError
from plantbus.formats.sparkplug.payload import (
    DATA_TYPES,
    Payload,
    build_file_descriptor,
    decode_payload,
    encode_rebirth_request,
    metric_value,
    payload_to_dict,
)
from plantbus.formats.sparkplug.state import NodeState
from plantbus.formats.sparkplug.topic import parse_topic

_SCALAR_TYPES = {
    9: "string",
    13: "uint32",
    4: "uint64",
    2: "float",
    1: "double",
    8: "bool",
    12: "bytes",
}
_FIELD = re.compile(r"^(optional|repeated)?\s*(\w+)\s+(\w+)\s*=\s*(\d+)\s*;$")
_EXTENSIONS = re.compile(r"^extensions\s+(\d+)\s+to\s+max\s*;$")
_ENUM_VALUE = re.compile(r"^(\w+)\s*=\s*(\d+)\s*;$")


@pytest.fixture(scope="module")
def tahu(samples_dir: Path) -> Path:
    return samples_dir / "sparkplug" / "eclipse_tahu"


def _parse_proto(
    text: str,
) -> tuple[dict[str, dict[str, tuple[Any, ...]]], dict[str, int]]:
    """Return {message: {field: (number, type, repeated, in oneof)}} and the enum."""
    messages: dict[str, dict[str, tuple[Any, ...]]] = {}
    enum: dict[str, int] = {}
    stack: list[tuple[str, str]] = []
    for raw in text.splitlines():
        line = raw.split("//")[0].strip()
        if not line:
            continue
        opened = re.match(r"^(message|oneof|enum)\s+(\w+)\s*\{$", line)
        if opened:
            stack.append((opened.group(1), opened.group(2)))
            if opened.group(1) == "message":
                messages[_path(stack)] = {}
            continue
        if line == "}":
            stack.pop()
            continue
        if stack and stack[-1][0] == "enum":
            value = _ENUM_VALUE.match(line)
            assert value, line
            enum[value.group(1)] = int(value.group(2))
            continue
        extensions = _EXTENSIONS.match(line)
        if extensions:
            messages[_path(stack)]["<extensions>"] = (int(extensions.group(1)),)
            continue
        field = _FIELD.match(line)
        if field and stack:
            label, kind, name, number = field.groups()
            in_oneof = stack[-1][0] == "oneof"
            messages[_path(stack)][name] = (
                int(number),
                kind,
                label == "repeated",
                in_oneof,
            )
    return messages, enum


def _path(stack: list[tuple[str, str]]) -> str:
    return ".".join(name for kind, name in stack if kind == "message")


def _descriptor_messages() -> dict[str, dict[str, tuple[Any, ...]]]:
    messages: dict[str, dict[str, tuple[Any, ...]]] = {}

    def walk(message: Any, prefix: str) -> None:
        path = f"{prefix}{message.name}"
        fields: dict[str, tuple[Any, ...]] = {}
        for field in message.field:
            kind = _SCALAR_TYPES.get(field.type) or field.type_name.rsplit(".", 1)[-1]
            fields[field.name] = (
                field.number,
                kind,
                field.label == 3,
                field.HasField("oneof_index"),
            )
        for extension_range in message.extension_range:
            assert extension_range.end == 2**29
            fields["<extensions>"] = (extension_range.start,)
        messages[path] = fields
        for nested in message.nested_type:
            walk(nested, f"{path}.")

    for message in build_file_descriptor().message_type:
        walk(message, "")
    return messages


def test_sparkplug_descriptor_matches_tahu_proto(tahu: Path) -> None:
    expected, enum = _parse_proto((tahu / "sparkplug_b.proto").read_text())

    assert len(expected) == 15
    assert _descriptor_messages() == expected
    assert enum == DATA_TYPES


def _sample_payload() -> Any:
    payload = Payload(timestamp=1_772_431_200_000, seq=7, uuid="u-1", body=b"\x00\x01")
    values = [
        ("Temperature", 1, DATA_TYPES["Float"], "float_value", 21.5),
        ("Speed", 2, DATA_TYPES["Int32"], "int_value", (-12) & 0xFFFFFFFF),
        ("Count", 3, DATA_TYPES["UInt64"], "long_value", 2**40),
        ("Running", 4, DATA_TYPES["Boolean"], "boolean_value", True),
        ("Program", 5, DATA_TYPES["String"], "string_value", "P-100"),
        ("Pressure", 6, DATA_TYPES["Double"], "double_value", 1.25e-7),
    ]
    for name, alias, datatype, field, value in values:
        metric = payload.metrics.add(name=name, alias=alias, datatype=datatype)
        setattr(metric, field, value)
    payload.metrics.add(
        name="Empty", alias=7, datatype=DATA_TYPES["Double"], is_null=True
    )
    return payload


def test_sparkplug_payload_dict_matches_tahu_schema(tahu: Path) -> None:
    schema = orjson.loads((tahu / "sparkplug_b.json").read_bytes())
    decoded = decode_payload(_sample_payload().SerializeToString(), "t")
    document = payload_to_dict(decoded)

    jsonschema.Draft4Validator(schema).validate(document)
    assert document["seq"] == 7
    assert [m["name"] for m in document["metrics"]][:2] == ["Temperature", "Speed"]
    assert document["metrics"][-1]["value"] is None


def test_sparkplug_metric_values_are_decimal_strings() -> None:
    decoded = decode_payload(_sample_payload().SerializeToString(), "t")
    values = [metric_value(metric) for metric in decoded.metrics]

    assert values == ["21.5", "-12", str(2**40), True, "P-100", "0.000000125", None]


def test_sparkplug_float32_value_is_shortest_decimal() -> None:
    metric = Payload().metrics.add(datatype=DATA_TYPES["Float"], float_value=0.1)

    assert metric_value(metric) == "0.1"


def test_sparkplug_datetime_metric_is_rfc3339() -> None:
    metric = Payload().metrics.add(
        datatype=DATA_TYPES["DateTime"], long_value=1_772_431_200_123
    )

    assert metric_value(metric) == "2026-03-02T06:00:00.123Z"


def test_sparkplug_decode_rejects_garbage() -> None:
    with pytest.raises(FormatError, match="not a Sparkplug B protobuf payload"):
        decode_payload(b"\xff\xff\xff", "spBv1.0/G/NDATA/N")


def test_sparkplug_rebirth_request_has_node_control_metric() -> None:
    request = decode_payload(encode_rebirth_request(1000), "t")

    assert [(m.name, m.boolean_value) for m in request.metrics] == [
        ("Node Control/Rebirth", True)
    ]
    assert request.metrics[0].datatype == DATA_TYPES["Boolean"]


def test_sparkplug_seq_wraps_after_255_without_gap() -> None:
    node = NodeState("G", "N")
    node.birth(bd_seq=0, seq=254)

    assert node.advance(255) is True
    assert node.advance(0) is True
    assert node.advance(2) is False
    assert node.advance(3) is True


def test_sparkplug_death_of_older_session_is_ignored() -> None:
    node = NodeState("G", "N")
    node.birth(bd_seq=4, seq=0)

    assert node.death(3) is False
    assert node.online is True
    assert node.death(4) is True
    assert node.online is False


def test_sparkplug_topic_parts() -> None:
    device = parse_topic("spBv1.0/Plant1/DDATA/Edge1/Press7")
    state = parse_topic("spBv1.0/STATE/scada")

    assert device is not None
    assert (device.message_type, device.group, device.node) == (
        "DDATA",
        "Plant1",
        "Edge1",
    )
    assert device.device == "Press7"
    assert state is not None
    assert state.host == "scada"
    assert parse_topic("spBv1.0/Plant1/NDATA") is None
    assert parse_topic("plant1/line/telemetry") is None
