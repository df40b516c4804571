"""Sparkplug B topic names.

Edge nodes publish to `spBv1.0/<group>/<message type>/<edge node>[/<device>]`.
Host applications publish their state to `spBv1.0/STATE/<host id>`
(Sparkplug 3.0) or `STATE/<host id>` (Sparkplug 2.2).
"""

from __future__ import annotations

from dataclasses import dataclass

NAMESPACE = "spBv1.0"
NODE_TYPES = frozenset({"NBIRTH", "NDEATH", "NDATA", "NCMD"})
DEVICE_TYPES = frozenset({"DBIRTH", "DDEATH", "DDATA", "DCMD"})


@dataclass(frozen=True, slots=True)
class SparkplugTopic:
    """The parts of a Sparkplug topic; `host` is set only for STATE topics."""

    message_type: str
    group: str = ""
    node: str = ""
    device: str | None = None
    host: str | None = None


def parse_topic(topic: str) -> SparkplugTopic | None:
    """Split a Sparkplug B topic into its parts; return None for any other topic."""
    parts = topic.split("/")
    if len(parts) == 2 and parts[0] == "STATE" and parts[1]:
        return SparkplugTopic("STATE", host=parts[1])
    if len(parts) < 3 or parts[0] != NAMESPACE:
        return None
    if parts[1] == "STATE":
        return SparkplugTopic("STATE", host=parts[2]) if len(parts) == 3 else None

    group, message_type = parts[1], parts[2]
    if message_type in NODE_TYPES and len(parts) == 4 and parts[3]:
        return SparkplugTopic(message_type, group, parts[3])
    if message_type in DEVICE_TYPES and len(parts) == 5 and parts[3] and parts[4]:
        return SparkplugTopic(message_type, group, parts[3], parts[4])
    return None


def command_topic(group: str, node: str) -> str:
    """Return the NCMD topic of an edge node."""
    return f"{NAMESPACE}/{group}/NCMD/{node}"
