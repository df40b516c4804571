"""Edge node state as a Sparkplug host application tracks it: births, aliases, seq.

Sparkplug B numbers the messages of one edge node with `seq` from 0 to 255
and wraps to 0. NBIRTH starts at 0, and NDATA, DBIRTH, DDATA and DDEATH each
take the next number. A number out of order means a message was lost, and
the host requests a new birth certificate from the node (a rebirth). NDEATH
carries no `seq` but the `bdSeq` of the birth it ends, so a late death
certificate of an older session can be distinguished from the current one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

SEQ_MODULUS = 256


@dataclass(frozen=True, slots=True)
class MetricInfo:
    """A metric as its birth certificate defined it: name, data type and unit."""

    name: str
    datatype: int
    unit: str | None = None


@dataclass(slots=True)
class DeviceState:
    """One device behind an edge node."""

    online: bool = False
    # True once a DDEATH or NDEATH took the device offline in this run.
    died: bool = False


@dataclass(slots=True)
class NodeState:
    """One edge node: online state, birth-death sequence, last seq, aliases."""

    group: str
    node: str
    online: bool = False
    died: bool = False
    bd_seq: int | None = None
    last_seq: int | None = None
    # Aliases are unique per edge node, across its own and its devices' metrics.
    aliases: dict[int, MetricInfo] = field(default_factory=dict)
    names: dict[str, MetricInfo] = field(default_factory=dict)
    devices: dict[str, DeviceState] = field(default_factory=dict)
    last_rebirth_request: float | None = None
    # Last running state of each machine from the configured state metric.
    running: dict[str, bool] = field(default_factory=dict)

    def birth(self, bd_seq: int | None, seq: int) -> None:
        """Start a new session of the node from its NBIRTH."""
        self.online = True
        self.bd_seq = bd_seq
        self.last_seq = seq
        self.aliases.clear()
        self.names.clear()
        for device in self.devices.values():
            device.online = False

    def death(self, bd_seq: int | None) -> bool:
        """End the node's session; return False for a death of an older session."""
        if bd_seq is not None and self.bd_seq is not None and bd_seq != self.bd_seq:
            return False
        self.online = False
        self.died = True
        self.last_seq = None
        for device in self.devices.values():
            if device.online:
                device.online = False
                device.died = True
        return True

    def learn(self, alias: int | None, info: MetricInfo) -> None:
        """Remember a metric from a birth certificate."""
        self.names[info.name] = info
        if alias is not None:
            self.aliases[alias] = info

    def advance(self, seq: int) -> bool:
        """Accept the next `seq`; return False when it is not the expected number."""
        expected = None if self.last_seq is None else (self.last_seq + 1) % SEQ_MODULUS
        self.last_seq = seq % SEQ_MODULUS
        return expected is not None and seq == expected

    def should_request_rebirth(self, min_interval: float) -> bool:
        """Return whether a rebirth request is due, and record the time when it is.

        A request is due unless the last one was less than `min_interval`
        seconds ago, so the limit also applies after a new birth of the node.
        """
        now = time.monotonic()
        last = self.last_rebirth_request
        if last is not None and now - last < min_interval:
            return False
        self.last_rebirth_request = now
        return True


@dataclass(slots=True)
class HostState:
    """The online state of one Sparkplug host application, from its STATE topic."""

    online: bool
    timestamp: int | None = None


class SparkplugState:
    """Every edge node and host application that sent messages to this source."""

    def __init__(self) -> None:
        self.nodes: dict[tuple[str, str], NodeState] = {}
        self.hosts: dict[str, HostState] = {}

    def node(self, group: str, node: str) -> NodeState:
        """Return the state of an edge node, created on first sight."""
        key = (group, node)
        state = self.nodes.get(key)
        if state is None:
            state = self.nodes[key] = NodeState(group, node)
        return state
