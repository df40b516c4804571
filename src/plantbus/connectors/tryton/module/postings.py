# mypy: ignore-errors
# trytond ships no type information and assembles model classes at run time
# through its pool, so static checks of this module only report noise.
"""Post one plantbus event inside Tryton, in one transaction.

The plantbus sink calls `production.plantbus_post` with the CloudEvent as a
JSON object. Doing the whole posting on the server makes it one RPC call and
one database transaction: it either happens completely or not at all, and a
redelivery finds it by the event id in `plantbus_event`. The mapping of each
event type onto Tryton records is described in `plantbus.connectors.tryton.sink`.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from trytond.exceptions import UserError
from trytond.pool import Pool
from trytond.transaction import without_check_access

from .shipments import post_asn_received

_OPEN_MOVE_STATES = {"staging", "draft", "assigned"}


def post_event(event: dict[str, Any]) -> str:
    """Post one event; return the reference of its posting, like 'stock.move,4'."""
    handlers = {
        "production.workorder.started.v1": _started,
        "production.material.consumed.v1": _consumed,
        "production.workorder.progressed.v1": _progressed,
        "production.workorder.completed.v1": _completed,
        "production.goods.produced.v1": _goods_produced,
        "supply.asn.received.v1": post_asn_received,
    }
    handler = handlers.get(event.get("type"))
    if handler is None:
        raise UserError(
            f"Event {event.get('id')!r} has type {event.get('type')!r}, which the "
            f"Tryton sink does not post; route only {', '.join(sorted(handlers))} "
            "to it."
        )
    with without_check_access():
        return handler(_Posting(event))


class _Posting:
    """One event being posted, with the look-ups its handlers share."""

    def __init__(self, event: dict[str, Any]) -> None:
        self.event = event
        self.id = str(event["id"])
        self.data = event.get("data") or {}
        self.pool = Pool()

    def fail(self, message: str) -> UserError:
        return UserError(f"Event {self.id!r}{message}")

    def production(self) -> Any:
        Production = self.pool.get("production")
        work_order = str(self.data.get("work_order_id", ""))
        found = Production.search(
            ["OR", ("number", "=", work_order), ("reference", "=", work_order)],
            order=[("id", "ASC")],
            limit=1,
        )
        if not found:
            raise self.fail(
                f" field `data.work_order_id` is {work_order!r}: no Tryton "
                "production has this number or reference; release the order in "
                "Tryton, then redrive the event."
            )
        return found[0]

    def posted(self, model: str, key: str | None = None) -> Any:
        Model = self.pool.get(model)
        found = Model.search([("plantbus_event", "=", key or self.id)], limit=1)
        return found[0] if found else None

    def product(self, code: str) -> Any:
        Product = self.pool.get("product.product")
        found = Product.search([("code", "=", code)], limit=1)
        if not found:
            raise self.fail(
                f" field `data.item` is {code!r}: no Tryton product has this code; "
                "create the product or fix the mapping."
            )
        return found[0]

    def quantity(self, name: str, product: Any) -> tuple[float, Any] | None:
        value = self.data.get(name)
        if value is None:
            return None
        Uom = self.pool.get("product.uom")
        units = Uom.search([("symbol", "=", value["unit"])], limit=1)
        if not units:
            raise self.fail(
                f" field `data.{name}.unit` is {value['unit']!r}: no Tryton unit of "
                "measure has this symbol; use the symbol Tryton shows for the "
                f"item, such as {product.default_uom.symbol!r}."
            )
        if units[0].category != product.default_uom.category:
            raise self.fail(
                f" field `data.{name}.unit` is {value['unit']!r}: item "
                f"{product.code!r} is measured in {product.default_uom.symbol!r}, "
                "which cannot be converted from that unit."
            )
        return float(Decimal(value["value"])), units[0]

    def location(self, code: str) -> Any:
        Location = self.pool.get("stock.location")
        found = Location.search([("code", "=", code)], limit=1)
        if not found:
            raise self.fail(
                f" field `data.location` is {code!r}: no Tryton stock location has "
                "this code; use a location code such as 'P1-STO'."
            )
        return found[0]

    def lot(self, number: str, product: Any) -> Any:
        Lot = self.pool.get("stock.lot")
        found = Lot.search(
            [("number", "=", number), ("product", "=", product.id)], limit=1
        )
        if found:
            return found[0]
        lot = Lot(number=number, product=product)
        lot.save()
        return lot

    def date(self, name: str) -> dt.date | None:
        text = self.data.get(name)
        if not text:
            return None
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        return moment.astimezone(dt.UTC).date()

    def ensure_running(self, production: Any) -> None:
        Production = self.pool.get("production")
        if production.state in ("running", "done"):
            return
        if production.state in ("cancelled", "request"):
            raise self.fail(
                f": Tryton production {production.number!r} is in state "
                f"{production.state!r} and cannot be started; release it in "
                "Tryton, then redrive the event."
            )
        Production.plantbus_run([production])
        if Production(production.id).state not in ("running", "done"):
            raise self.fail(
                f": Tryton production {production.number!r} stayed in state "
                f"{Production(production.id).state!r} after `run`; check it in "
                "Tryton, then redrive the event."
            )

    def outputs(self, production: Any, product: Any) -> list[Any]:
        waste = {location.id for location in production.warehouse.waste_locations}
        return [
            move
            for move in sorted(production.outputs, key=lambda m: m.id)
            if move.product == product and move.to_location.id not in waste
        ]


def _reference(record: Any) -> str:
    return f"{record.__name__},{record.id}"


def _do_moves(moves: list[Any]) -> None:
    Move = Pool().get("stock.move")
    Move.do([move for move in moves if move.state in _OPEN_MOVE_STATES])


def _started(posting: _Posting) -> str:
    production = posting.production()
    posting.ensure_running(production)
    return _reference(production)


def _consumed(posting: _Posting) -> str:
    Move = posting.pool.get("stock.move")
    existing = posting.posted("stock.move")
    if existing is not None:
        _do_moves([existing])
        return _reference(existing)

    production = posting.production()
    if production.state != "done":
        posting.ensure_running(production)
        production = type(production)(production.id)
    data = posting.data
    product = posting.product(data["item"])
    quantity, unit = posting.quantity("quantity", product)
    move = Move(
        product=product,
        unit=unit,
        quantity=quantity,
        from_location=(
            posting.location(data["location"])
            if data.get("location")
            else production.warehouse.storage_location
        ),
        to_location=production.location,
        production_input=production,
        company=production.company,
        plantbus_event=posting.id,
        effective_date=posting.date("consumed_at") or dt.date.today(),
    )
    if data.get("lot"):
        move.lot = posting.lot(data["lot"], product)
    move.save()
    _do_moves([move])
    return _reference(move)


def _progressed(posting: _Posting) -> str:
    Cycle = posting.pool.get("production.work.cycle")
    seconds = float(Decimal(posting.data["duration_seconds"]))
    existing = posting.posted("production.work.cycle")
    if existing is None:
        production = posting.production()
        posting.ensure_running(production)
        product = type(production)(production.id).product
        good = posting.quantity("quantity", product)
        scrap = posting.quantity("scrap", product)
        existing = Cycle(
            work=_work(posting, type(production)(production.id)),
            plantbus_event=posting.id,
            plantbus_quantity=good[0] if good else None,
            plantbus_scrap=scrap[0] if scrap else None,
        )
        existing.save()
    Cycle.plantbus_finish([existing], seconds)
    return _reference(existing)


def _work(posting: _Posting, production: Any) -> Any:
    works = sorted(production.works, key=lambda w: (w.sequence or 0, w.id))
    if not works:
        raise posting.fail(
            f": Tryton production {production.number!r} has no works; give it a "
            "routing before reporting progress."
        )
    operation = posting.data.get("operation")
    if operation is None:
        # Without an operation the progress belongs to the first open step.
        for work in works:
            if work.state not in ("finished", "done"):
                return work
        return works[-1]
    for work in works:
        if work.operation.name.casefold() == operation.casefold():
            return work
    names = ", ".join(repr(work.operation.name) for work in works)
    raise posting.fail(
        f" field `data.operation` is {operation!r}: production "
        f"{production.number!r} has the operations {names}; map the shop-floor "
        "operation onto one of them."
    )


def _completed(posting: _Posting) -> str:
    Production = posting.pool.get("production")
    Move = posting.pool.get("stock.move")
    production = posting.production()
    if production.state == "done":
        return _reference(production)
    if not production.plantbus_event:
        production.plantbus_event = posting.id
        production.save()
    posting.ensure_running(production)
    production = Production(production.id)

    data = posting.data
    product = posting.product(data["item"])
    quantity, unit = posting.quantity("quantity", product)
    outputs = posting.outputs(production, product)
    done = [move for move in outputs if move.state == "done"]
    planned = [move for move in outputs if move.state in _OPEN_MOVE_STATES]
    if done:
        # Goods-produced events posted the output already; they are the record
        # of what entered stock, so the rest of the plan goes.
        Move.cancel(planned)
    else:
        lot = posting.lot(data["lot"], product) if data.get("lot") else None
        if planned:
            output = planned[0]
            Move.cancel(planned[1:])
        else:
            output = Move(
                product=product,
                from_location=production.location,
                production_output=production,
                company=production.company,
            )
        output.quantity = quantity
        output.unit = unit
        output.to_location = production.warehouse.storage_location
        if lot is not None:
            output.lot = lot
        output.save()

    scrap = posting.quantity("scrap", product)
    if scrap is not None and scrap[0] > 0:
        _post_scrap(posting, production, product, scrap)

    _close_works(posting, production)
    Production.plantbus_do([Production(production.id)])
    return _reference(production)


def _post_scrap(
    posting: _Posting, production: Any, product: Any, scrap: tuple[float, Any]
) -> None:
    Move = posting.pool.get("stock.move")
    waste = production.warehouse.waste_locations
    if not waste:
        raise posting.fail(
            f" reports scrap, but Tryton warehouse {production.warehouse.code!r} "
            "has no waste location; add one to the warehouse, then redrive the "
            "event."
        )
    # One event, several postings: each gets its own derived key.
    key = f"{posting.id}/scrap"
    if posting.posted("stock.move", key) is not None:
        return
    Move(
        product=product,
        unit=scrap[1],
        quantity=scrap[0],
        from_location=production.location,
        to_location=waste[0],
        production_output=production,
        company=production.company,
        plantbus_event=key,
    ).save()


def _close_works(posting: _Posting, production: Any) -> None:
    """Finish every work: do open cycles, add an empty cycle where there is none."""
    Cycle = posting.pool.get("production.work.cycle")
    for work in production.works:
        if work.state in ("finished", "done"):
            continue
        open_cycles = [c for c in work.cycles if c.state in ("draft", "running")]
        if open_cycles:
            # Open cycles end with the work order; their duration runs until
            # now, which is Tryton's own rule for `do`.
            Cycle.plantbus_finish(open_cycles, None)
            continue
        if any(cycle.state == "done" for cycle in work.cycles):
            continue
        cycle = Cycle(work=work, plantbus_event=f"{posting.id}/close/{work.id}")
        cycle.save()
        Cycle.plantbus_finish([cycle], 0)


def _goods_produced(posting: _Posting) -> str:
    Move = posting.pool.get("stock.move")
    existing = posting.posted("stock.move")
    if existing is not None:
        _do_moves([existing])
        return _reference(existing)

    production = posting.production()
    data = posting.data
    product = posting.product(data["item"])
    outputs = posting.outputs(production, product)
    if production.state == "done":
        done = [move for move in outputs if move.state == "done"]
        if not done:
            raise posting.fail(
                f": the production of work order {data['work_order_id']!r} is done "
                f"without an output of item {data['item']!r}; post the goods in "
                "Tryton by hand."
            )
        lot = data.get("lot")
        for move in done:
            if lot is None or (move.lot and move.lot.number == lot):
                return _reference(move)
        # NOTE: the completion posted the goods with another lot; a done move
        # cannot change, so the event confirms the first output as it is.
        return _reference(done[0])

    posting.ensure_running(production)
    production = type(production)(production.id)
    quantity, unit = posting.quantity("quantity", product)
    planned = [
        move
        for move in posting.outputs(production, product)
        if move.state in _OPEN_MOVE_STATES and not move.plantbus_event
    ]
    move = (
        planned[0]
        if planned
        else Move(
            product=product,
            from_location=production.location,
            production_output=production,
            company=production.company,
        )
    )
    move.quantity = quantity
    move.unit = unit
    move.to_location = (
        posting.location(data["location"])
        if data.get("location")
        else production.warehouse.storage_location
    )
    move.plantbus_event = posting.id
    move.effective_date = posting.date("produced_at") or dt.date.today()
    if data.get("lot"):
        move.lot = posting.lot(data["lot"], product)
    move.save()
    _do_moves([move])
    return _reference(move)
