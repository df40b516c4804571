"""Post shop-floor events to Tryton productions, idempotently.

Every posting carries the event id in the `plantbus_event` field that the
plantbus Tryton module adds (unique where set). Delivery looks the posting up
by event id first and returns its reference when it exists. Otherwise it
creates the posting, and when Tryton rejects the insert because another attempt
posted the same event in the meantime, it looks up again and returns that
reference. A posting takes several RPC calls (create, then the workflow
buttons), so a found posting that stopped half way is finished, not created
again.

How the events map onto Tryton:

* started: the production is released as needed and set to running. Its
  planned input moves (the BOM explosion) are cancelled first, because the
  shop floor reports the real consumption with `material.consumed` events, and
  Tryton's `run` would otherwise consume the whole plan on top of them. The
  cancelled moves stay on the production as the record of the plan.
* material consumed: one done input move per event, from the plant's storage
  (or the event's location) into the production location, with its lot.
* progressed: one done `production.work.cycle` on the work of the operation,
  with its duration and the reported good and scrapped quantity.
* completed: the output move of the item gets the reported quantity and lot,
  works that never got a cycle are closed with a zero-length cycle, and the
  production is done. Scrap is an extra output move of the item into the
  plant's scrap location (a Tryton waste location): it shares the production
  cost and never counts as stock.
* goods produced: on a running production, the output move of the item is
  done with the event's quantity and lot, and the completion later keeps it.
  When the completion already posted the output, the event confirms it and
  returns the existing move.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from plantbus.connectors.base import Sink
from plantbus.connectors.tryton.client import TrytonClient, TrytonError
from plantbus.connectors.tryton.lookup import TrytonLookup
from plantbus.errors import PermanentDeliveryError
from plantbus.events.envelope import Event, parse_time

logger = logging.getLogger("plantbus.connectors.tryton")

# Part of the text of `msg_plantbus_event_unique` in the module's message.xml.
_DUPLICATE_EVENT_TEXT = "already carries this plantbus event id"
_OPEN_MOVE_STATES = ("staging", "draft", "assigned")
_PRODUCTION_FIELDS = (
    "number",
    "reference",
    "state",
    "product",
    "product.code",
    "warehouse",
    "location",
    "company",
    "plantbus_event",
)


def is_duplicate_event(error: TrytonError) -> bool:
    """Return True when Tryton rejected a posting because its event was posted."""
    return _DUPLICATE_EVENT_TEXT in error.message


def _log_concurrent(event: Event) -> None:
    logger.info(
        "Event %s was posted by a concurrent delivery; returning that posting",
        event.id,
        extra={"event_id": event.id, "correlation_id": event.correlationid},
    )


def reference(model: str, record_id: int) -> str:
    """Return a Tryton record reference such as 'stock.move,42'."""
    return f"{model},{record_id}"


def _quantity(event: Event, name: str) -> tuple[float, str] | None:
    value = (event.data or {}).get(name)
    if value is None:
        return None
    return float(Decimal(value["value"])), str(value["unit"])


def _date(event: Event, name: str) -> dt.date | None:
    text = (event.data or {}).get(name)
    return None if text is None else parse_time(text).astimezone(dt.UTC).date()


class TrytonSink(Sink):
    """Deliver production events to Tryton as moves, work cycles and state changes."""

    def __init__(
        self,
        name: str,
        client: TrytonClient,
        *,
        lookup: TrytonLookup | None = None,
    ) -> None:
        self.name = name
        self.client = client
        self.lookup = lookup or TrytonLookup(client)
        self._handlers: dict[str, Callable[[Event], Awaitable[str]]] = {
            "production.workorder.started.v1": self._started,
            "production.material.consumed.v1": self._consumed,
            "production.workorder.progressed.v1": self._progressed,
            "production.workorder.completed.v1": self._completed,
            "production.goods.produced.v1": self._goods_produced,
        }

    async def start(self) -> None:
        """Log the client in unless it is already; the client belongs to the caller."""
        await self.client.start()

    def describe(self) -> dict[str, Any]:
        """Return the sink's kind, target database and the event types it posts."""
        return {
            **super().describe(),
            "target": self.client.endpoint,
            "event_types": sorted(self._handlers),
        }

    async def deliver(self, event: Event) -> str | None:
        """Post one event to Tryton and return the reference of the posting."""
        handler = self._handlers.get(event.type)
        if handler is None:
            raise PermanentDeliveryError(
                f"Event {event.id!r} has type {event.type!r}, which the Tryton sink "
                f"does not post; route only {', '.join(sorted(self._handlers))} "
                "to it."
            )
        try:
            result = await handler(event)
        except TrytonError:
            # A delivery that races a concurrent delivery of the same event can
            # find a record done under its feet; the posting then exists.
            settled = await self._settled(event)
            if settled is None:
                raise
            result = settled
        logger.info(
            "Posted event %s (%s) to Tryton as %s",
            event.id,
            event.type,
            result,
            extra={"event_id": event.id, "correlation_id": event.correlationid},
        )
        return result

    async def _settled(self, event: Event) -> str | None:
        """Return the reference of the finished posting of an event, if there is one."""
        if event.type == "production.workorder.progressed.v1":
            model = "production.work.cycle"
        elif event.type == "production.workorder.completed.v1":
            model = "production"
        else:
            model = "stock.move"
        posted = await self._posted(model, event.id, [])
        if posted is None or posted["state"] != "done":
            return None
        return reference(model, posted["id"])

    # Finding records.

    async def _production(self, event: Event) -> dict[str, Any]:
        work_order = str((event.data or {}).get("work_order_id", ""))
        rows = await self.client.search_read(
            "production",
            ["OR", ("number", "=", work_order), ("reference", "=", work_order)],
            _PRODUCTION_FIELDS,
            order=[("id", "ASC")],
            limit=1,
        )
        if not rows:
            raise PermanentDeliveryError(
                f"Event {event.id!r} field `data.work_order_id` is {work_order!r}: "
                "no Tryton production has this number or reference; release the "
                "order in Tryton, then redrive the event."
            )
        return rows[0]

    async def _reload(self, production: dict[str, Any]) -> dict[str, Any]:
        rows = await self.client.read(
            "production", [production["id"]], _PRODUCTION_FIELDS
        )
        return rows[0]

    async def _posted(
        self, model: str, event_id: str, fields: list[str]
    ) -> dict[str, Any] | None:
        rows = await self.client.search_read(
            model, [("plantbus_event", "=", event_id)], ["state", *fields], limit=1
        )
        return rows[0] if rows else None

    async def _product(self, event: Event, code: str) -> dict[str, Any]:
        item = await self.lookup.item(code)
        if item is None:
            raise PermanentDeliveryError(
                f"Event {event.id!r} field `data.item` is {code!r}: no Tryton product "
                "has this code; create the product or fix the mapping."
            )
        return item

    async def _unit(
        self, event: Event, field: str, symbol: str, item: dict[str, Any]
    ) -> int:
        uom = await self.lookup.uom(symbol)
        if uom is None:
            raise PermanentDeliveryError(
                f"Event {event.id!r} field `data.{field}.unit` is {symbol!r}: no "
                "Tryton unit of measure has this symbol; use the symbol Tryton "
                f"shows for the item, such as {item['uom']!r}."
            )
        return int(uom["id"])

    async def _location(self, event: Event, code: str) -> int:
        location = await self.lookup.location(code)
        if location is None:
            raise PermanentDeliveryError(
                f"Event {event.id!r} field `data.location` is {code!r}: no Tryton "
                "stock location has this code; use a location code such as "
                "'P1-STO'."
            )
        return int(location["id"])

    async def _warehouse(self, production: dict[str, Any]) -> dict[str, Any]:
        warehouse = await self.lookup.warehouse(production["warehouse"])
        assert warehouse is not None, production
        return warehouse

    async def _lot(self, number: str, product_id: int) -> int:
        domain = [("number", "=", number), ("product", "=", product_id)]
        found = await self.client.search("stock.lot", domain, limit=1)
        if found:
            return found[0]
        # NOTE: Tryton has no unique constraint on (number, product), so two
        # deliveries racing on a new lot number can create it twice.
        created = await self.client.create(
            "stock.lot", [{"number": number, "product": product_id}]
        )
        return created[0]

    # Production states.

    async def _ensure_running(self, event: Event, production: dict[str, Any]) -> None:
        """Release and run a production; cancel its planned, unposted inputs first."""
        state = production["state"]
        if state in ("running", "done"):
            return
        if state in ("cancelled", "request"):
            raise PermanentDeliveryError(
                f"Event {event.id!r}: Tryton production {production['number']!r} is "
                f"in state {state!r} and cannot be started; release it in Tryton, "
                "then redrive the event."
            )
        # One transaction in the plantbus Tryton module: wait, cancel the
        # planned inputs that no event posted, assign and run.
        await self.client.execute("production", "plantbus_run", [production["id"]])

        production.update(await self._reload(production))
        if production["state"] not in ("running", "done"):
            raise PermanentDeliveryError(
                f"Event {event.id!r}: Tryton production {production['number']!r} "
                f"stayed in state {production['state']!r} after `run`; check it "
                "in Tryton, then redrive the event."
            )

    # Handlers, one per event type.

    async def _started(self, event: Event) -> str:
        production = await self._production(event)
        await self._ensure_running(event, production)
        return reference("production", production["id"])

    async def _consumed(self, event: Event) -> str:
        existing = await self._posted("stock.move", event.id, [])
        if existing is not None:
            return await self._finish_move(existing)

        production = await self._production(event)
        if production["state"] != "done":
            await self._ensure_running(event, production)
        data = event.data
        item = await self._product(event, data["item"])
        quantity, unit = _quantity(event, "quantity") or (0.0, item["uom"])
        warehouse = await self._warehouse(production)
        values: dict[str, Any] = {
            "product": item["id"],
            "unit": await self._unit(event, "quantity", unit, item),
            "quantity": quantity,
            "from_location": (
                await self._location(event, data["location"])
                if data.get("location")
                else warehouse["storage"]
            ),
            "to_location": production["location"],
            "production_input": production["id"],
            "company": production["company"],
            "plantbus_event": event.id,
        }
        if data.get("lot"):
            values["lot"] = await self._lot(data["lot"], item["id"])
        effective = _date(event, "consumed_at")
        if effective is not None:
            values["effective_date"] = effective
        return await self._create_move(event, values)

    async def _progressed(self, event: Event) -> str:
        existing = await self._posted("production.work.cycle", event.id, ["duration"])
        if existing is not None:
            return await self._finish_cycle(existing, self._duration(event))

        production = await self._production(event)
        await self._ensure_running(event, production)
        work = await self._work(event, production)
        good = _quantity(event, "quantity")
        scrap = _quantity(event, "scrap")
        values = {
            "work": work,
            "plantbus_event": event.id,
            "plantbus_quantity": good[0] if good else None,
            "plantbus_scrap": scrap[0] if scrap else None,
        }
        try:
            created = await self.client.create("production.work.cycle", [values])
        except TrytonError as exc:
            if not is_duplicate_event(exc):
                raise
            _log_concurrent(event)
            posted = await self._posted("production.work.cycle", event.id, ["duration"])
            assert posted is not None
            return await self._finish_cycle(posted, self._duration(event))
        cycle = {"id": created[0], "state": "draft", "duration": None}
        return await self._finish_cycle(cycle, self._duration(event))

    async def _completed(self, event: Event) -> str:
        production = await self._production(event)
        ref = reference("production", production["id"])
        if production["state"] == "done":
            return ref
        if production["plantbus_event"] is None:
            # Claiming the production with the event id makes a second
            # completion event of the same work order resume this one.
            await self.client.write(
                "production", [production["id"]], {"plantbus_event": event.id}
            )
        await self._ensure_running(event, production)

        item = await self._product(event, event.data["item"])
        quantity, unit = _quantity(event, "quantity") or (0.0, item["uom"])
        unit_id = await self._unit(event, "quantity", unit, item)
        warehouse = await self._warehouse(production)
        outputs = await self._outputs(production, item["id"], warehouse)
        done = [move for move in outputs if move["state"] == "done"]
        planned = [move for move in outputs if move["state"] in _OPEN_MOVE_STATES]
        if done:
            # Goods-produced events posted the output already; they are the
            # record of what entered stock, so the rest of the plan goes.
            if planned:
                await self.client.execute(
                    "stock.move", "plantbus_cancel", [m["id"] for m in planned]
                )
        else:
            values: dict[str, Any] = {
                "quantity": quantity,
                "unit": unit_id,
                "to_location": warehouse["storage"],
            }
            if event.data.get("lot"):
                values["lot"] = await self._lot(event.data["lot"], item["id"])
            if planned:
                await self.client.write("stock.move", [planned[0]["id"]], values)
                if len(planned) > 1:
                    await self.client.execute(
                        "stock.move", "plantbus_cancel", [m["id"] for m in planned[1:]]
                    )
            else:
                await self._create_output(production, item["id"], values)

        scrap = _quantity(event, "scrap")
        if scrap is not None and scrap[0] > 0:
            await self._post_scrap(event, production, item, scrap, warehouse)

        await self._close_works(event, production)
        await self.client.execute("production", "plantbus_do", [production["id"]])
        return ref

    async def _goods_produced(self, event: Event) -> str:
        existing = await self._posted("stock.move", event.id, [])
        if existing is not None:
            return await self._finish_move(existing)

        production = await self._production(event)
        data = event.data
        item = await self._product(event, data["item"])
        warehouse = await self._warehouse(production)
        outputs = await self._outputs(production, item["id"], warehouse)
        if production["state"] == "done":
            return self._confirm_output(event, outputs)

        await self._ensure_running(event, production)
        quantity, unit = _quantity(event, "quantity") or (0.0, item["uom"])
        values: dict[str, Any] = {
            "quantity": quantity,
            "unit": await self._unit(event, "quantity", unit, item),
            "to_location": (
                await self._location(event, data["location"])
                if data.get("location")
                else warehouse["storage"]
            ),
            "plantbus_event": event.id,
        }
        if data.get("lot"):
            values["lot"] = await self._lot(data["lot"], item["id"])
        effective = _date(event, "produced_at")
        if effective is not None:
            values["effective_date"] = effective

        planned = [
            move
            for move in outputs
            if move["state"] in _OPEN_MOVE_STATES and move["plantbus_event"] is None
        ]
        if not planned:
            values.update(
                {
                    "product": item["id"],
                    "from_location": production["location"],
                    "production_output": production["id"],
                    "company": production["company"],
                }
            )
            return await self._create_move(event, values)
        try:
            await self.client.write("stock.move", [planned[0]["id"]], values)
        except TrytonError as exc:
            if not is_duplicate_event(exc):
                raise
            _log_concurrent(event)
            posted = await self._posted("stock.move", event.id, [])
            assert posted is not None
            return await self._finish_move(posted)
        return await self._finish_move({"id": planned[0]["id"], "state": "draft"})

    # Steps shared by the handlers.

    async def _create_move(self, event: Event, values: dict[str, Any]) -> str:
        try:
            created = await self.client.create("stock.move", [values])
        except TrytonError as exc:
            if not is_duplicate_event(exc):
                raise
            _log_concurrent(event)
            posted = await self._posted("stock.move", event.id, [])
            assert posted is not None
            return await self._finish_move(posted)
        return await self._finish_move({"id": created[0], "state": "draft"})

    async def _finish_move(self, move: dict[str, Any]) -> str:
        if move["state"] != "done":
            await self.client.execute("stock.move", "plantbus_do", [move["id"]])
        return reference("stock.move", move["id"])

    @staticmethod
    def _duration(event: Event) -> dt.timedelta:
        return dt.timedelta(seconds=float(Decimal(event.data["duration_seconds"])))

    async def _finish_cycle(self, cycle: dict[str, Any], duration: dt.timedelta) -> str:
        if cycle["state"] in ("draft", "running"):
            await self.client.execute(
                "production.work.cycle",
                "plantbus_finish",
                [cycle["id"]],
                duration.total_seconds(),
            )
        return reference("production.work.cycle", cycle["id"])

    async def _work(self, event: Event, production: dict[str, Any]) -> int:
        works = await self.client.search_read(
            "production.work",
            [("production", "=", production["id"])],
            ["operation.name", "state"],
            order=[("sequence", "ASC"), ("id", "ASC")],
        )
        if not works:
            raise PermanentDeliveryError(
                f"Event {event.id!r}: Tryton production {production['number']!r} "
                "has no works; give it a routing before reporting progress."
            )
        operation = event.data.get("operation")
        if operation is None:
            # Without an operation the progress belongs to the first open step.
            for work in works:
                if work["state"] not in ("finished", "done"):
                    return int(work["id"])
            return int(works[-1]["id"])
        for work in works:
            if work["operation."]["name"].casefold() == operation.casefold():
                return int(work["id"])
        names = ", ".join(repr(work["operation."]["name"]) for work in works)
        raise PermanentDeliveryError(
            f"Event {event.id!r} field `data.operation` is {operation!r}: "
            f"production {production['number']!r} has the operations {names}; "
            "map the shop-floor operation onto one of them."
        )

    async def _outputs(
        self, production: dict[str, Any], product_id: int, warehouse: dict[str, Any]
    ) -> list[dict[str, Any]]:
        moves = await self.client.search_read(
            "stock.move",
            [
                ("production_output", "=", production["id"]),
                ("product", "=", product_id),
                ("to_location", "not in", warehouse["waste"] or [-1]),
            ],
            ["state", "quantity", "lot", "lot.number", "plantbus_event"],
            order=[("id", "ASC")],
        )
        return moves

    async def _create_output(
        self, production: dict[str, Any], product_id: int, values: dict[str, Any]
    ) -> int:
        created = await self.client.create(
            "stock.move",
            [
                {
                    **values,
                    "product": product_id,
                    "from_location": production["location"],
                    "production_output": production["id"],
                    "company": production["company"],
                }
            ],
        )
        return created[0]

    def _confirm_output(self, event: Event, outputs: list[dict[str, Any]]) -> str:
        done = [move for move in outputs if move["state"] == "done"]
        if not done:
            raise PermanentDeliveryError(
                f"Event {event.id!r}: the production of work order "
                f"{event.data['work_order_id']!r} is done without an output of item "
                f"{event.data['item']!r}; post the goods in Tryton by hand."
            )
        lot = event.data.get("lot")
        for move in done:
            if lot is None or (move.get("lot.") or {}).get("number") == lot:
                return reference("stock.move", move["id"])
        # NOTE: the completion posted the goods with another lot; a done move
        # cannot change, so the event confirms the first output as it is.
        logger.warning(
            "Event %s reports lot %s, but the completed production posted %s",
            event.id,
            lot,
            [(move.get("lot.") or {}).get("number") for move in done],
        )
        return reference("stock.move", done[0]["id"])

    async def _post_scrap(
        self,
        event: Event,
        production: dict[str, Any],
        item: dict[str, Any],
        scrap: tuple[float, str],
        warehouse: dict[str, Any],
    ) -> None:
        if not warehouse["waste"]:
            raise PermanentDeliveryError(
                f"Event {event.id!r} reports scrap, but Tryton warehouse "
                f"{warehouse['code']!r} has no waste location; add one to the "
                "warehouse, then redrive the event."
            )
        values = {
            "product": item["id"],
            "unit": await self._unit(event, "scrap", scrap[1], item),
            "quantity": scrap[0],
            "from_location": production["location"],
            "to_location": warehouse["waste"][0],
            "production_output": production["id"],
            "company": production["company"],
            # One event, several postings: each gets its own derived key.
            "plantbus_event": f"{event.id}/scrap",
        }
        try:
            await self.client.create("stock.move", [values])
        except TrytonError as exc:
            if not is_duplicate_event(exc):
                raise

    async def _close_works(self, event: Event, production: dict[str, Any]) -> None:
        """Finish every work: do running cycles, add an empty cycle where none is."""
        works = await self.client.search_read(
            "production.work",
            [("production", "=", production["id"])],
            ["state", "cycles"],
        )
        for work in works:
            if work["state"] in ("finished", "done"):
                continue
            cycles = await self.client.read(
                "production.work.cycle", work["cycles"], ["state"]
            )
            # Open cycles end with the work order; their duration runs until
            # now, which is Tryton's own rule for `do`.
            open_cycles = [
                c["id"] for c in cycles if c["state"] in ("draft", "running")
            ]
            if open_cycles:
                await self.client.execute(
                    "production.work.cycle", "plantbus_finish", open_cycles, None
                )
            if any(c["state"] == "done" for c in cycles) or open_cycles:
                continue
            key = f"{event.id}/close/{work['id']}"
            try:
                created = await self.client.create(
                    "production.work.cycle",
                    [{"work": work["id"], "plantbus_event": key}],
                )
                cycle = {"id": created[0], "state": "draft"}
            except TrytonError as exc:
                if not is_duplicate_event(exc):
                    raise
                # A concurrent delivery created this cycle: finish it here too,
                # so that the production can be done whichever delivery wins.
                posted = await self._posted("production.work.cycle", key, [])
                assert posted is not None
                cycle = posted
            await self._finish_cycle(cycle, dt.timedelta(0))
