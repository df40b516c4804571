"""Data item definitions read from an MTConnectDevices document (Devices.xml)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from plantbus.errors import ConfigError


@dataclass(frozen=True, slots=True)
class DataItem:
    """One data item of a device: its id, name, category, type and sub-type."""

    id: str
    name: str | None
    category: str
    type: str
    sub_type: str | None = None
    representation: str | None = None
    device: str | None = None


def _local(tag: object) -> str:
    text = str(tag)
    return text.rsplit("}", 1)[-1]


def read_devices(path: Path) -> dict[str, dict[str, DataItem]]:
    """Read a Devices.xml file and return each device's data items by id and name.

    Devices are keyed by name and by uuid. The namespace differs between
    MTConnect versions, so elements are matched on their local names.
    """
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    try:
        root = etree.parse(str(path), parser).getroot()
    except (OSError, etree.XMLSyntaxError) as exc:
        raise ConfigError(
            f"The MTConnect devices file {str(path)!r} cannot be read: {exc}. "
            f"Give the path of an MTConnectDevices XML document in `devices_file`."
        ) from exc

    devices: dict[str, dict[str, DataItem]] = {}
    for element in root.iter():
        if _local(element.tag) not in ("Device", "Agent"):
            continue
        name = element.get("name") or element.get("uuid") or element.get("id", "")
        items: dict[str, DataItem] = {}
        for node in element.iter():
            if _local(node.tag) != "DataItem":
                continue
            item = DataItem(
                id=node.get("id", ""),
                name=node.get("name"),
                category=node.get("category", "EVENT"),
                type=node.get("type", ""),
                sub_type=node.get("subType"),
                representation=node.get("representation"),
                device=name,
            )
            items[item.id] = item
            if item.name:
                items.setdefault(item.name, item)
        for key in {name, element.get("uuid"), element.get("id")}:
            if key:
                devices[key] = items
    return devices


def select_device(
    devices: dict[str, dict[str, DataItem]], device: str | None, path: Path
) -> dict[str, DataItem]:
    """Return the data items of `device`, or of the only device when it is None."""
    if device is not None:
        if device not in devices:
            known = sorted({items_device(i) for i in devices.values() if i})
            raise ConfigError(
                f"Device {device!r} is not in the MTConnect devices file "
                f"{str(path)!r}. Set `device` to one of {known!r}."
            )
        return devices[device]
    names = {items_device(items) for items in devices.values() if items}
    if len(names) != 1:
        raise ConfigError(
            f"The MTConnect devices file {str(path)!r} describes the devices "
            f"{sorted(names)!r}. Set `device` to the one this SHDR stream is for."
        )
    return next(items for items in devices.values() if items)


def items_device(items: dict[str, DataItem]) -> str:
    """Return the device name of a non-empty data item table."""
    return next(iter(items.values())).device or ""
