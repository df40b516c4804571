"""NodeMapper: rules, built-in data and JSONata maps of OPC UA notifications."""

from __future__ import annotations

import pytest

from plantbus.config.model import OpcUaNodeConfig
from plantbus.connectors.opcua.mapping import (
    MACHINE_DOWN,
    PARTS_COUNTED,
    NodeMapper,
    Notification,
    NotificationError,
)
from plantbus.errors import ConfigError


def _mapper(**options: object) -> NodeMapper:
    config = OpcUaNodeConfig.model_validate(
        {"node_id": "ns=2;s=Oven.Temp", "machine_id": "OVEN-1", **options}
    )
    return NodeMapper("ovens", config)


def test_node_mapper_runs_jsonata_map() -> None:
    mapper = _mapper(
        type="production.machine.state.changed.v1",
        map='{"machine_id": machine_id, "state": value > 200 ? "HOT" : "COLD",'
        ' "at": source_timestamp}',
    )

    [event] = mapper.map(
        Notification("ns=2;s=Oven.Temp", 231.5, "2026-03-02T06:00:00Z")
    )

    assert event.data == {
        "machine_id": "OVEN-1",
        "state": "HOT",
        "at": "2026-03-02T06:00:00Z",
    }


def test_node_mapper_rules_match_json_values_only() -> None:
    mapper = _mapper(rules=[{"when": True, "type": MACHINE_DOWN}])

    assert mapper.map(Notification("n", 1, "2026-03-02T06:00:00Z")) == []
    assert len(mapper.map(Notification("n", True, "2026-03-02T06:00:01Z"))) == 1
    # The same value again (after a resubscribe) gives no second event.
    assert mapper.map(Notification("n", True, "2026-03-02T06:00:01Z")) == []


def test_node_mapper_needs_map_for_other_types() -> None:
    with pytest.raises(ConfigError, match=r"has no built-in data\. Give a JSONata"):
        _mapper(type="quality.hold.placed.v1")


def test_opcua_node_config_needs_type_or_rules() -> None:
    with pytest.raises(ValueError, match="give exactly one of `type` or `rules`"):
        _mapper()


def test_node_mapper_part_count_delta() -> None:
    mapper = _mapper(type=PARTS_COUNTED)

    counts = [
        mapper.map(Notification("n", value, f"2026-03-02T06:00:0{i}Z"))[0].data
        for i, value in enumerate([10, 12, 3])
    ]

    assert [(d["count"], d.get("delta")) for d in counts] == [
        (10, None),
        (12, 2),
        (3, 3),
    ]
    with pytest.raises(NotificationError, match="invalid part count -1"):
        mapper.map(Notification("n", -1, "2026-03-02T06:00:09Z"))
