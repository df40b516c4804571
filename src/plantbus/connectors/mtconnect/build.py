"""Build an MTConnect source from its hub-file section."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from plantbus.config.model import MtconnectSourceConfig
from plantbus.connectors.base import Source
from plantbus.connectors.mtconnect.agent import AgentSource
from plantbus.connectors.mtconnect.devices import (
    DataItem,
    items_device,
    read_devices,
    select_device,
)
from plantbus.connectors.mtconnect.mapping import MachineMapper
from plantbus.connectors.mtconnect.shdr import ShdrParser, ShdrSource


def build_mtconnect_source(config: MtconnectSourceConfig, base_dir: Path) -> Source:
    """Create the agent or SHDR source that `config` describes."""
    mapper = MachineMapper(
        config.name, machine_ids=config.machine_ids, work_centers=config.work_centers
    )
    if config.mode == "agent":
        assert config.url is not None
        return AgentSource(
            config.name,
            config.url,
            mapper,
            device=config.device,
            count=config.count,
            poll_interval=config.poll_seconds,
            timeout=config.timeout_seconds,
            reconnect_initial=config.reconnect_initial_seconds,
            reconnect_max=config.reconnect_max_seconds,
        )

    items: dict[str, DataItem] = {}
    device = config.device
    if config.devices_file is not None:
        path = (base_dir / config.devices_file).resolve()
        items = select_device(read_devices(path), device, path)
        # Events name the device as the devices file does, even when
        # `device` gave its uuid.
        device = items_device(items) if items else device
    assert device is not None and config.port is not None
    parser = partial(ShdrParser, device, items, item_types=config.data_items)
    return ShdrSource(
        config.name,
        config.host,
        config.port,
        parser,
        mapper,
        connect_timeout=config.timeout_seconds,
        reconnect_initial=config.reconnect_initial_seconds,
        reconnect_max=config.reconnect_max_seconds,
    )
