"""OpcUaSource against an asyncua server that the tests start, stop and restart."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from asyncua import ua
from opcua_server import PressServer, make_certificate, start_press_server
from tests.connectors.event_recorder import Recorder

from plantbus.config.model import OpcUaNodeConfig, OpcUaSourceConfig
from plantbus.connectors.opcua.mapping import (
    MACHINE_DOWN,
    MACHINE_UP,
    PARTS_COUNTED,
    STATE_CHANGED,
)
from plantbus.connectors.opcua.source import OpcUaSource

# Starting an asyncua server takes seconds (it builds the standard address
# space), so the tests share one, except the test that restarts its own.
pytestmark = pytest.mark.asyncio(loop_scope="module")
USERS = {"plantbus": "s3cret"}

T0 = datetime(2026, 3, 2, 6, 0, 0, 125000, tzinfo=UTC)


@dataclass
class Cell:
    """The shared server; the restart test replaces it with a new one."""

    server: PressServer


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cell() -> AsyncIterator[Cell]:
    holder = Cell(await start_press_server(users=USERS))
    yield holder
    await holder.server.stop()


@pytest.fixture
def press(cell: Cell) -> PressServer:
    return cell.server


def _at(seconds: int) -> datetime:
    return T0.replace(second=seconds)


def _config(server: PressServer, **options: object) -> OpcUaSourceConfig:
    ns = server.namespace
    return OpcUaSourceConfig.model_validate(
        {
            "kind": "opcua",
            "name": "press-cell",
            "endpoint": server.endpoint,
            "publishing_interval_ms": 50,
            "reconnect_initial_seconds": 0.2,
            "reconnect_max_seconds": 1.0,
            "nodes": [
                {
                    "node_id": f"ns={ns};s=Press4.Fault",
                    "machine_id": "PRESS-4",
                    "work_center": "WC-PRESS",
                    "rules": [
                        {"when": True, "type": MACHINE_DOWN},
                        {"when": False, "type": MACHINE_UP},
                    ],
                },
                {
                    "node_id": f"ns={ns};s=Press4.PartCount",
                    "machine_id": "PRESS-4",
                    "type": PARTS_COUNTED,
                },
                {
                    "node_id": f"ns={ns};s=Press4.Mode",
                    "machine_id": "PRESS-4",
                    "type": STATE_CHANGED,
                },
                {
                    "node_id": "i=2253",
                    "subscribe": "event",
                    "machine_id": "PRESS-4",
                    "type": MACHINE_DOWN,
                },
            ],
            **options,
        }
    )


async def _connected(source: OpcUaSource, count: int) -> None:
    async with asyncio.timeout(15):
        while source.connections < count:
            await asyncio.sleep(0.05)
    # Let the server confirm the monitored items before the test writes.
    await asyncio.sleep(0.3)


def _of(recorder: Recorder, event_type: str) -> list[dict[str, object]]:
    return [e.data for e in recorder.order if e.type == event_type]


async def test_opcua_source_maps_server_events(press: PressServer) -> None:
    config = _config(press)
    # Name the event type explicitly: BaseEventType, which the server uses.
    config.nodes[3].ua_event_type = "i=2041"
    recorder = Recorder()
    source = OpcUaSource.from_config(config)
    async with recorder.running(source, stop_timeout=10):
        await _connected(source, 1)
        await press.fire_event("Hydraulic pressure low", _at(20))
        await recorder.wait_until(
            lambda: any("reason" in d for d in _of(recorder, MACHINE_DOWN))
        )

    [event] = [e for e in recorder.order if e.data.get("reason")]
    assert event.type == MACHINE_DOWN
    assert event.data == {
        "machine_id": "PRESS-4",
        "since": "2026-03-02T06:00:20.125000Z",
        "reason": "Hydraulic pressure low",
    }
    assert event.time == "2026-03-02T06:00:20.125000Z"


async def test_opcua_source_password_login(
    press: PressServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = press
    wrong = OpcUaSource.from_config(
        _config(server, username="plantbus", password="wrong")
    )
    right = OpcUaSource.from_config(
        _config(server, username="plantbus", password="s3cret")
    )
    wrong_log, right_log = Recorder(), Recorder()
    caplog.set_level(logging.WARNING, "plantbus.connectors.opcua")
    async with (
        wrong_log.running(wrong, stop_timeout=10),
        right_log.running(right, stop_timeout=10),
    ):
        await _connected(right, 1)
        await server.write(server.part_count, 5, ua.VariantType.UInt32, _at(30))
        await right_log.wait_until(
            lambda: [d["count"] for d in _of(right_log, PARTS_COUNTED)][-1:] == [5]
        )

    assert wrong.connections == 0
    assert wrong_log.order == []
    assert "Failed to connect to the OPC UA server" in caplog.text
    assert "s3cret" not in caplog.text


async def test_opcua_source_rejects_non_count(
    press: PressServer,
) -> None:
    server = press
    await server.write(server.mode, "IDLE", ua.VariantType.String, _at(39))
    config = _config(server)
    config.nodes[2] = OpcUaNodeConfig(
        node_id=f"ns={server.namespace};s=Press4.Mode",
        machine_id="PRESS-4",
        type=PARTS_COUNTED,
    )
    recorder = Recorder()
    source = OpcUaSource.from_config(config)
    async with recorder.running(source, stop_timeout=10):
        await _connected(source, 1)
        await server.write(server.mode, "twelve", ua.VariantType.String, _at(40))
        await server.write(server.part_count, 3, ua.VariantType.UInt32, _at(41))
        await recorder.wait_until(lambda: len(recorder.dead_letters) == 2)
        await recorder.wait_until(
            lambda: [d["count"] for d in _of(recorder, PARTS_COUNTED)][-1:] == [3]
        )

    # The initial "IDLE" and then "twelve" are no counts.
    letters = recorder.dead_letters
    assert [letter.details["value"] for letter in letters] == ["'IDLE'", "'twelve'"]
    assert "has the invalid part count 'twelve'" in letters[1].error
    assert letters[1].content_type == "application/opcua+uabinary"
    decoded = ua.ua_binary.struct_from_binary(
        ua.DataValue, ua.utils.Buffer(letters[1].payload)
    )
    assert decoded.Value.Value == "twelve"
    assert decoded.SourceTimestamp == _at(40)


async def test_opcua_source_unknown_node_logged(
    press: PressServer, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(press)
    config.nodes.insert(
        0,
        OpcUaNodeConfig(
            node_id=f"ns={press.namespace};s=Press4.NoSuchNode",
            machine_id="PRESS-4",
            type=PARTS_COUNTED,
        ),
    )
    recorder = Recorder()
    source = OpcUaSource.from_config(config)
    caplog.set_level(logging.ERROR, "plantbus.connectors.opcua")
    async with recorder.running(source, stop_timeout=10):
        await _connected(source, 1)
        await press.write(press.part_count, 77, ua.VariantType.UInt32, _at(45))
        await recorder.wait_until(
            lambda: [d["count"] for d in _of(recorder, PARTS_COUNTED)][-1:] == [77]
        )

    assert "rejected the subscription to node 'ns=2;s=Press4.NoSuchNode'" in caplog.text
    assert "BadNodeIdUnknown" in caplog.text


async def test_opcua_source_connects_with_security_string(tmp_path: Path) -> None:
    server_pair = await make_certificate(tmp_path, "server")
    client_cert, client_key = await make_certificate(tmp_path, "client")
    server = await start_press_server(certificate=server_pair)
    security = f"Basic256Sha256,SignAndEncrypt,{client_cert},{client_key}"
    secure = OpcUaSource.from_config(_config(server, security=security))
    plain = OpcUaSource.from_config(_config(server))
    secure_log, plain_log = Recorder(), Recorder()
    try:
        async with (
            secure_log.running(secure, stop_timeout=10),
            plain_log.running(plain, stop_timeout=10),
        ):
            await _connected(secure, 1)
            await server.write(server.part_count, 9, ua.VariantType.UInt32, _at(50))
            await secure_log.wait_until(
                lambda: [d["count"] for d in _of(secure_log, PARTS_COUNTED)][-1:] == [9]
            )
    finally:
        await server.stop()

    # The server offers no endpoint without security, so the plain source
    # never connects.
    assert plain.connections == 0
    assert plain_log.order == []


# Runs last: it restarts the shared server.
async def test_opcua_source_resubscribes_after_server_restart(
    cell: Cell,
) -> None:
    server = cell.server
    port = server.port
    await server.write(server.part_count, 0, ua.VariantType.UInt32, _at(0))
    await server.write(server.fault, False, ua.VariantType.Boolean, _at(0))
    await server.write(server.mode, "IDLE", ua.VariantType.String, _at(0))
    recorder = Recorder()
    source = OpcUaSource.from_config(_config(server))
    async with recorder.running(source, stop_timeout=10):
        await _connected(source, 1)
        await server.write(server.part_count, 41, ua.VariantType.UInt32, _at(1))
        await server.write(server.part_count, 42, ua.VariantType.UInt32, _at(2))
        await server.write(server.fault, True, ua.VariantType.Boolean, _at(3))
        await recorder.wait_until(lambda: len(_of(recorder, MACHINE_DOWN)) == 1)
        await recorder.wait_until(
            lambda: [d["count"] for d in _of(recorder, PARTS_COUNTED)][-1:] == [42]
        )

        # The server goes away and comes back on the same port, with its
        # variables at their initial values.
        await server.stop()
        await asyncio.sleep(0.5)
        server = cell.server = await start_press_server(port, users=USERS)
        await _connected(source, 2)
        await server.write(server.part_count, 7, ua.VariantType.UInt32, _at(10))
        await server.write(server.mode, "RUNNING", ua.VariantType.String, _at(11))
        await recorder.wait_until(
            lambda: [d["count"] for d in _of(recorder, PARTS_COUNTED)][-1:] == [7]
        )
        await recorder.wait_until(
            lambda: (
                [d["state"] for d in _of(recorder, STATE_CHANGED)][-1:] == ["RUNNING"]
            )
        )

    assert source.connections == 2
    counts = _of(recorder, PARTS_COUNTED)
    # The first subscription reports the initial 0, then 41 and 42; after the
    # restart the server starts at 0 again (a counter reset), then 7.
    assert [(d["count"], d.get("delta")) for d in counts] == [
        (0, None),
        (41, 41),
        (42, 1),
        (0, 0),
        (7, 7),
    ]
    assert counts[1]["at"] == "2026-03-02T06:00:01.125000Z"
    assert counts[4]["at"] == "2026-03-02T06:00:10.125000Z"
    down = _of(recorder, MACHINE_DOWN)
    assert down == [
        {
            "machine_id": "PRESS-4",
            "since": "2026-03-02T06:00:03.125000Z",
            "work_center": "WC-PRESS",
        }
    ]
    # Fault is false at each subscription start, and after the restart.
    assert [d["machine_id"] for d in _of(recorder, MACHINE_UP)] == ["PRESS-4"] * 2
    states = _of(recorder, STATE_CHANGED)
    assert [(d["state"], d.get("previous_state")) for d in states] == [
        ("IDLE", None),
        ("RUNNING", "IDLE"),
    ]
    assert states[1]["at"] == "2026-03-02T06:00:11.125000Z"
    assert {e.partitionkey for e in recorder.order} == {"PRESS-4"}
    assert {e.source for e in recorder.order} == {"opcua:press-cell"}
    assert recorder.dead_letters == []
