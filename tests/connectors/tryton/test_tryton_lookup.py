"""Cached master-data look-ups in the demo ERP."""

from __future__ import annotations

import pytest

from plantbus.connectors.tryton.client import TrytonClient
from plantbus.connectors.tryton.lookup import TrytonLookup

pytestmark = pytest.mark.tryton


async def test_lookup_item_returns_name_and_unit(tryton: TrytonClient) -> None:
    lookup = TrytonLookup(tryton)

    item = await lookup.item("C-205")

    assert item is not None
    assert item["name"] == "Sheet steel"
    assert item["uom"] == "kg"
    assert item["type"] == "goods"


async def test_lookup_item_unknown_returns_none(tryton: TrytonClient) -> None:
    assert await TrytonLookup(tryton).item("NO-SUCH") is None


async def test_lookup_bom_lists_inputs_and_outputs(tryton: TrytonClient) -> None:
    bom = await TrytonLookup(tryton).bom("FG-102")

    assert bom is not None
    assert bom["code"] == "BOM-FG-102"
    assert {"item": "C-205", "quantity": "12.5", "unit": "kg"} in bom["inputs"]
    assert bom["outputs"] == [{"item": "FG-102", "quantity": "1", "unit": "u"}]


async def test_lookup_routing_lists_steps_and_centers(tryton: TrytonClient) -> None:
    routing = await TrytonLookup(tryton).routing("Routing FG-100")

    assert routing is not None
    assert [step["operation"] for step in routing["steps"]] == [
        "Machining",
        "Assembly",
        "Test",
    ]
    assert routing["steps"][0]["work_centers"] == {
        "P1": "P1 Machining",
        "P2": "P2 Machining",
    }


async def test_lookup_work_centers_filters_plant(tryton: TrytonClient) -> None:
    centers = await TrytonLookup(tryton).work_centers("P2")

    assert centers
    assert {center["plant"] for center in centers} == {"P2"}
    assert "P2 Assembly" in {center["name"] for center in centers}


async def test_lookup_locations_and_warehouses(tryton: TrytonClient) -> None:
    lookup = TrytonLookup(tryton)

    storage = await lookup.location("P1-STO")
    warehouses = await lookup.warehouses()

    assert storage is not None
    assert storage["warehouse"] == "P1"
    assert [w["code"] for w in warehouses if w["code"] in ("P1", "P2")] == ["P1", "P2"]
    assert all(w["waste"] for w in warehouses if w["code"] in ("P1", "P2"))


async def test_lookup_cache_serves_repeat_without_rpc(tryton: TrytonClient) -> None:
    lookup = TrytonLookup(tryton)
    await lookup.item("FG-100")
    await tryton.close()

    # The client is closed, so a second RPC call would have to reconnect and
    # log in. The cache must return the item without one.
    item = await lookup.item("FG-100")

    assert item is not None
    assert tryton._http is None


async def test_lookup_by_kind_dispatches(tryton: TrytonClient) -> None:
    lookup = TrytonLookup(tryton)

    item = await lookup.lookup("item", "FG-101")
    center = await lookup.lookup("work_center", "P1 Test")
    warehouse = await lookup.lookup("warehouse", "P2")

    assert item is not None and item["name"] == "Gear motor GM-2"
    assert center is not None and center["plant"] == "P1"
    assert warehouse is not None and warehouse["code"] == "P2"
    with pytest.raises(ValueError, match="not supported"):
        await lookup.lookup("customer", "C1")
