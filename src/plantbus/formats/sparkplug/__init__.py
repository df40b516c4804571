"""Eclipse Sparkplug B: payload decoding, topic names and edge node state."""

from plantbus.formats.sparkplug.payload import (
    DATA_TYPES,
    Payload,
    decode_payload,
    encode_rebirth_request,
    metric_value,
)
from plantbus.formats.sparkplug.state import NodeState, SparkplugState
from plantbus.formats.sparkplug.topic import SparkplugTopic, parse_topic

__all__ = [
    "DATA_TYPES",
    "NodeState",
    "Payload",
    "SparkplugState",
    "SparkplugTopic",
    "decode_payload",
    "encode_rebirth_request",
    "metric_value",
    "parse_topic",
]
