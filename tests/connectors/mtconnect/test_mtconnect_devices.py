"""The devices file reader, the hub-file section and the sample folder's licence."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from plantbus.config.model import MtconnectSourceConfig, SourceConfig
from plantbus.connectors.mtconnect.agent import AgentSource
from plantbus.connectors.mtconnect.build import build_mtconnect_source
from plantbus.connectors.mtconnect.devices import read_devices, select_device
from plantbus.connectors.mtconnect.shdr import ShdrSource
from plantbus.errors import ConfigError


def _devices_file(samples: Path) -> Path:
    return samples / "mes" / "mtconnect_cppagent" / "Devices.xml"


def test_read_devices_finds_both_devices_of_sample(samples_dir: Path) -> None:
    devices = read_devices(_devices_file(samples_dir))

    okuma = devices["OKUMA"]
    mazak = devices["Mazak"]
    assert devices["OKUMA.123456"] is okuma
    assert len({item.id for item in okuma.values()}) == 100
    assert len({item.id for item in mazak.values()}) == 116
    execution = okuma["pexecution"]
    assert (execution.id, execution.category, execution.type) == (
        "Lpexecution",
        "EVENT",
        "EXECUTION",
    )
    assert okuma["Lppartcount"].type == "PART_COUNT"
    assert okuma["avail"].type == "AVAILABILITY"
    assert okuma["estop"].type == "EMERGENCY_STOP"
    conditions = sorted(
        i.name or i.id for i in okuma.values() if i.category == "CONDITION"
    )
    assert len(set(conditions)) == 10
    assert "CoolantSystem1_cond" in conditions


def test_select_device_two_devices(samples_dir: Path) -> None:
    path = _devices_file(samples_dir)

    with pytest.raises(
        ConfigError, match=r"describes the devices \['Mazak', 'OKUMA'\]"
    ):
        select_device(read_devices(path), None, path)
    with pytest.raises(ConfigError, match="Device 'HAAS' is not in"):
        select_device(read_devices(path), "HAAS", path)


def test_read_devices_rejects_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        read_devices(tmp_path / "Devices.xml")


def test_mtconnect_config_builds_shdr_source(samples_dir: Path) -> None:
    config = TypeAdapter(SourceConfig).validate_python(
        {
            "kind": "mtconnect",
            "name": "okuma",
            "mode": "shdr",
            "port": 7878,
            "devices_file": "mes/mtconnect_cppagent/Devices.xml",
            "device": "OKUMA.123456",
            "machine_ids": {"OKUMA": "M-100"},
        }
    )
    assert isinstance(config, MtconnectSourceConfig)

    source = build_mtconnect_source(config, samples_dir)

    assert isinstance(source, ShdrSource)
    assert source.port == 7878
    parser = source.new_parser()
    assert parser.device == "OKUMA"
    assert parser.items["pexecution"].type == "EXECUTION"
    assert source.mapper.machine("OKUMA").machine_id == "M-100"


def test_mtconnect_config_builds_agent_source(tmp_path: Path) -> None:
    config = MtconnectSourceConfig(
        kind="mtconnect", name="cell-2", mode="agent", url="http://127.0.0.1:5000/"
    )

    source = build_mtconnect_source(config, tmp_path)

    assert isinstance(source, AgentSource)
    assert source.url == "http://127.0.0.1:5000"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "agent"}, "mode `agent` needs the agent's `url`"),
        ({"mode": "shdr", "device": "M1"}, "mode `shdr` needs the adapter's `port`"),
        (
            {"mode": "shdr", "port": 7878},
            "mode `shdr` needs `device` or `devices_file`",
        ),
        ({"mode": "mqtt"}, "Input should be 'agent' or 'shdr'"),
    ],
)
def test_mtconnect_config_rejects_incomplete_modes(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        MtconnectSourceConfig.model_validate(
            {"kind": "mtconnect", "name": "m", **options}
        )


def test_mtconnect_samples_are_apache_licensed(samples_dir: Path) -> None:
    """The samples are read in place by tests, never copied; their licence allows it."""
    text = (samples_dir / "mes" / "mtconnect_cppagent" / "LICENSE.TXT").read_text()

    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "http://www.apache.org/licenses/" in text
