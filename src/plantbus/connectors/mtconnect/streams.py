"""Read MTConnectStreams and MTConnectError documents from an MTConnect agent.

The namespace changes with every MTConnect version (1.x to 2.x), so elements
are matched on their local names and the namespace is ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lxml import etree

from plantbus.connectors.mtconnect.mapping import Observation, normalise_timestamp

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_CATEGORIES = {"Samples": "SAMPLE", "Events": "EVENT", "Condition": "CONDITION"}


class StreamsError(ValueError):
    """An agent response that is not a readable MTConnect document."""


@dataclass(frozen=True, slots=True)
class Header:
    """The buffer position of an agent: instance id and sequence numbers."""

    instance_id: str
    first_sequence: int
    last_sequence: int
    next_sequence: int


@dataclass(slots=True)
class StreamsDocument:
    """An MTConnectStreams response, or the errors of an MTConnectError response."""

    header: Header | None
    observations: list[Observation] = field(default_factory=list)
    # (errorCode, text) pairs of an MTConnectError document.
    errors: list[tuple[str, str]] = field(default_factory=list)


def parse_streams(data: bytes) -> StreamsDocument:
    """Parse an agent response; observations come sorted by sequence number."""
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise StreamsError(
            f"The agent response is not well-formed XML: {exc}."
        ) from None

    root_name = _local(root.tag)
    if root_name == "MTConnectError":
        errors = [
            (element.get("errorCode", ""), (element.text or "").strip())
            for element in root.iter()
            if _local(element.tag) == "Error"
        ]
        return StreamsDocument(_header(root, required=False), errors=errors)
    if root_name != "MTConnectStreams":
        raise StreamsError(
            f"The agent response is a {root_name!r} document; expected "
            f"MTConnectStreams or MTConnectError. Check the agent URL."
        )

    header = _header(root, required=True)
    observations = [
        observation
        for stream in root.iter()
        if _local(stream.tag) == "DeviceStream"
        for observation in _device_observations(stream)
    ]
    observations.sort(key=lambda o: o.sequence or 0)
    return StreamsDocument(header, observations)


def _header(root: etree._Element, *, required: bool) -> Header | None:
    element = next((e for e in root if _local(e.tag) == "Header"), None)
    if element is None:
        if required:
            raise StreamsError("The MTConnectStreams document has no Header.")
        return None
    try:
        return Header(
            instance_id=element.get("instanceId", ""),
            first_sequence=int(element.get("firstSequence", "0")),
            last_sequence=int(element.get("lastSequence", "0")),
            next_sequence=int(element.get("nextSequence", "0")),
        )
    except ValueError:
        if not required:
            return None
        raise StreamsError(
            f"The Header sequence numbers {dict(element.attrib)!r} are not "
            f"integers; the agent response is damaged."
        ) from None


def _device_observations(stream: etree._Element) -> list[Observation]:
    device = stream.get("name") or stream.get("uuid") or ""
    found: list[Observation] = []
    for group in stream.iter():
        category = _CATEGORIES.get(_local(group.tag))
        if category is None:
            continue
        for element in group:
            if not isinstance(element.tag, str):
                continue
            found.append(_observation(element, device, category))
    return found


def _observation(element: etree._Element, device: str, category: str) -> Observation:
    name = _local(element.tag)
    item = element.get("dataItemId", "")
    try:
        timestamp = normalise_timestamp(element.get("timestamp", ""))
        sequence = int(element.get("sequence", ""))
    except ValueError:
        raise StreamsError(
            f"Observation {name!r} of data item {item!r} has timestamp "
            f"{element.get('timestamp')!r} and sequence {element.get('sequence')!r}; "
            f"expected an RFC 3339 time and an integer."
        ) from None

    if category == "CONDITION":
        # The element name is the level (Normal, Warning, Fault, Unavailable).
        kind = element.get("type")
        value = name.upper()
    else:
        kind = _CAMEL_BOUNDARY.sub("_", name.split(":")[-1]).upper()
        value = "".join(element.itertext()).strip()
    return Observation(
        timestamp=timestamp,
        device=device,
        key=item or element.get("name", ""),
        type=kind,
        value=value,
        sub_type=element.get("subType"),
        category=category,
        sequence=sequence,
    )


def _local(tag: object) -> str:
    return str(tag).rsplit("}", 1)[-1]
