"""Cached master-data look-ups in Tryton for enrichment steps and the sink.

Every result is a plain JSON-ready dict (quantities as decimal strings) kept
for `ttl` seconds, so that a burst of events about the same item costs one RPC
call. A look-up of something Tryton does not have returns None, and that
answer is cached too.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from plantbus.connectors.tryton.client import TrytonClient


class TTLCache:
    """A bounded mapping whose entries expire `ttl` seconds after they were stored."""

    def __init__(self, ttl: float, max_entries: int = 4096) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[Any, tuple[float, Any]] = OrderedDict()

    def get(self, key: Any) -> tuple[bool, Any]:
        """Return (True, value) for a fresh entry, else (False, None)."""
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        expires, value = entry
        if expires < time.monotonic():
            del self._entries[key]
            return False, None
        return True, value

    def put(self, key: Any, value: Any) -> None:
        """Store a value, evicting the oldest entry when the cache is full."""
        self._entries[key] = (time.monotonic() + self.ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()


def _decimal(value: float | None) -> str | None:
    # Tryton keeps quantities as floats; str() of a float gives its shortest
    # exact representation, which Decimal keeps as written.
    if value is None:
        return None
    return format(Decimal(str(value)).normalize(), "f")


class TrytonLookup:
    """Master data in Tryton: items, units, BOMs, routings, work centers, locations."""

    def __init__(self, client: TrytonClient, ttl: float = 300.0) -> None:
        self.client = client
        self.cache = TTLCache(ttl)

    async def _cached(
        self, key: tuple[str, ...], load: Callable[[], Awaitable[Any]]
    ) -> Any:
        found, value = self.cache.get(key)
        if found:
            return value
        value = await load()
        self.cache.put(key, value)
        return value

    async def item(self, code: str) -> dict[str, Any] | None:
        """Return the product with this code: id, name, type and default unit."""

        async def load() -> dict[str, Any] | None:
            rows = await self.client.search_read(
                "product.product",
                [("code", "=", code)],
                ["code", "name", "type", "default_uom", "default_uom.symbol"],
                limit=1,
            )
            if not rows:
                return None
            row = rows[0]
            return {
                "id": row["id"],
                "code": row["code"],
                "name": row["name"],
                "type": row["type"],
                "uom_id": row["default_uom"],
                "uom": row["default_uom."]["symbol"],
            }

        result: dict[str, Any] | None = await self._cached(("item", code), load)
        return result

    async def uom(self, symbol: str) -> dict[str, Any] | None:
        """Return the unit of measure with this symbol: id, name and category."""

        async def load() -> dict[str, Any] | None:
            rows = await self.client.search_read(
                "product.uom",
                [("symbol", "=", symbol)],
                ["symbol", "name", "category"],
                limit=1,
            )
            return rows[0] if rows else None

        result: dict[str, Any] | None = await self._cached(("uom", symbol), load)
        return result

    async def bom(self, code: str) -> dict[str, Any] | None:
        """Return a BOM by its code, or the first BOM of the item with that code."""

        async def load() -> dict[str, Any] | None:
            rows = await self.client.search_read(
                "production.bom", [("code", "=", code)], ["code", "name"], limit=1
            )
            if not rows:
                item = await self.item(code)
                if item is None:
                    return None
                links = await self.client.search_read(
                    "product.product-production.bom",
                    [("product", "=", item["id"])],
                    ["bom"],
                    order=[("sequence", "ASC")],
                    limit=1,
                )
                if not links:
                    return None
                rows = await self.client.read(
                    "production.bom", [links[0]["bom"]], ["code", "name"]
                )
            bom = rows[0]
            lines = {}
            for side in ("inputs", "outputs"):
                lines[side] = [
                    {
                        "item": line["product."]["code"],
                        "quantity": _decimal(line["quantity"]),
                        "unit": line["unit."]["symbol"],
                    }
                    for line in await self.client.search_read(
                        f"production.bom.{side[:-1]}",
                        [("bom", "=", bom["id"])],
                        ["product.code", "quantity", "unit.symbol"],
                        order=[("id", "ASC")],
                    )
                ]
            return {"id": bom["id"], "code": bom["code"], "name": bom["name"], **lines}

        result: dict[str, Any] | None = await self._cached(("bom", code), load)
        return result

    async def routing(self, name: str) -> dict[str, Any] | None:
        """Return a routing by name with its steps and their work centers per plant."""

        async def load() -> dict[str, Any] | None:
            rows = await self.client.search_read(
                "production.routing", [("name", "=", name)], ["name"], limit=1
            )
            if not rows:
                return None
            steps = await self.client.search_read(
                "production.routing.step",
                [("routing", "=", rows[0]["id"])],
                ["sequence", "operation.name", "operation.work_center_category"],
                order=[("sequence", "ASC"), ("id", "ASC")],
            )
            centers = await self.work_centers()
            result_steps = []
            for step in steps:
                operation = step["operation."]
                category = operation.get("work_center_category")
                result_steps.append(
                    {
                        "sequence": step["sequence"],
                        "operation": operation["name"],
                        "work_centers": {
                            center["plant"]: center["name"]
                            for center in centers
                            if category is not None
                            and center["category_id"] == category
                        },
                    }
                )
            return {"id": rows[0]["id"], "name": rows[0]["name"], "steps": result_steps}

        result: dict[str, Any] | None = await self._cached(("routing", name), load)
        return result

    async def work_centers(self, plant: str | None = None) -> list[dict[str, Any]]:
        """Return the work centers, optionally of one plant (warehouse code)."""

        async def load() -> list[dict[str, Any]]:
            rows = await self.client.search_read(
                "production.work.center",
                [],
                [
                    "name",
                    "category",
                    "category.name",
                    "warehouse.code",
                    "cost_price",
                    "cost_method",
                ],
                order=[("name", "ASC")],
            )
            return [
                {
                    "id": row["id"],
                    "name": row["name"],
                    "category_id": row["category"],
                    "category": (row.get("category.") or {}).get("name"),
                    "plant": row["warehouse."]["code"],
                    "cost_price": str(row["cost_price"]),
                    "cost_method": row["cost_method"],
                }
                for row in rows
            ]

        centers: list[dict[str, Any]] = await self._cached(("work_centers",), load)
        if plant is None:
            return centers
        return [center for center in centers if center["plant"] == plant]

    async def location(self, code: str) -> dict[str, Any] | None:
        """Return the stock location with this code: id, name, type, warehouse."""

        async def load() -> dict[str, Any] | None:
            rows = await self.client.search_read(
                "stock.location",
                [("code", "=", code)],
                ["code", "name", "type"],
                limit=1,
            )
            if not rows:
                return None
            row = rows[0]
            return {
                "id": row["id"],
                "code": row["code"],
                "name": row["name"],
                "type": row["type"],
                "warehouse": await self._warehouse_of(row["id"]),
            }

        result: dict[str, Any] | None = await self._cached(("location", code), load)
        return result

    async def _warehouse_of(self, location_id: int) -> str | None:
        # Storage zones sit under their warehouse in the location tree, while
        # production and scrap locations are linked from the warehouse record.
        for warehouse in await self.warehouses():
            linked = {warehouse["production"], *warehouse["waste"]}
            if location_id == warehouse["id"] or location_id in linked:
                return str(warehouse["code"])
        current: int | None = location_id
        while current is not None:
            row = (
                await self.client.read(
                    "stock.location", [current], ["type", "code", "parent"]
                )
            )[0]
            if row["type"] == "warehouse":
                return str(row["code"])
            current = row["parent"]
        return None

    async def warehouses(self) -> list[dict[str, Any]]:
        """Return the warehouses (plants) with the ids of their main locations."""

        async def load() -> list[dict[str, Any]]:
            rows = await self.client.search_read(
                "stock.location",
                [("type", "=", "warehouse")],
                [
                    "code",
                    "name",
                    "input_location",
                    "output_location",
                    "storage_location",
                    "production_location",
                    "waste_locations",
                ],
                order=[("code", "ASC")],
            )
            return [
                {
                    "id": row["id"],
                    "code": row["code"],
                    "name": row["name"],
                    "input": row["input_location"],
                    "output": row["output_location"],
                    "storage": row["storage_location"],
                    "production": row["production_location"],
                    "waste": list(row["waste_locations"]),
                }
                for row in rows
            ]

        result: list[dict[str, Any]] = await self._cached(("warehouses",), load)
        return result

    async def lookup(self, kind: str, key: str) -> dict[str, Any] | None:
        """Look a record up by kind and key, as the pipeline's enrich step does.

        Kinds: item, uom, bom, routing, location, warehouse and work_center
        (by name). An unknown kind raises ValueError.
        """
        if kind == "work_center":
            for center in await self.work_centers():
                if center["name"] == key:
                    return center
            return None
        finders = {
            "item": self.item,
            "uom": self.uom,
            "bom": self.bom,
            "routing": self.routing,
            "location": self.location,
            "warehouse": self.warehouse,
        }
        finder = finders.get(kind)
        if finder is None:
            raise ValueError(
                f"Tryton look-up kind {kind!r} is not supported; use one of "
                f"{', '.join(sorted([*finders, 'work_center']))}."
            )
        return await finder(key)

    async def warehouse(self, code_or_id: str | int) -> dict[str, Any] | None:
        """Return one warehouse by code or id."""
        for warehouse in await self.warehouses():
            if code_or_id in (warehouse["code"], warehouse["id"]):
                return warehouse
        return None


# The name that the hub's enrich steps use for this class.
TrytonLookups = TrytonLookup
