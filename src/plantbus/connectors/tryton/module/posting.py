# mypy: ignore-errors
# trytond ships no type information and assembles model classes at run time
# through its pool, so static checks of this module only report noise.
"""The `plantbus_event` field on moves, work cycles, productions and shipments."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sql import Null
from sql.operators import Equal
from trytond.model import Exclude, fields
from trytond.pool import Pool, PoolMeta
from trytond.rpc import RPC
from trytond.transaction import Transaction, without_check_access

_UNIQUE_MESSAGE = "plantbus.msg_plantbus_event_unique"
_OPEN_MOVE_STATES = {"staging", "draft", "assigned"}


class EventKeyMixin:
    """Add the unique, indexed `plantbus_event` field to a posted record."""

    __slots__ = ()

    # Not `readonly`: Tryton rejects writes of readonly fields over RPC, and
    # the sink sets this field with the posting.
    plantbus_event = fields.Char(
        "Plantbus Event",
        help="The id of the plantbus event that caused this posting.",
    )

    @classmethod
    def __setup__(cls) -> None:
        super().__setup__()
        table = cls.__table__()
        # A partial unique index: rows without an event id are not constrained,
        # and the index also serves the look-up by event id.
        # NOTE: tested on SQLite only; on PostgreSQL Tryton turns this into an
        # EXCLUDE constraint, which should behave the same but was not run.
        cls._sql_constraints += [
            (
                "plantbus_event_unique",
                Exclude(
                    table,
                    (table.plantbus_event, Equal),
                    where=table.plantbus_event != Null,
                ),
                _UNIQUE_MESSAGE,
            ),
        ]

    @classmethod
    def copy(cls, records: Any, default: dict[str, Any] | None = None) -> Any:
        # A copy is a new posting that no event caused.
        default = dict(default or {})
        default.setdefault("plantbus_event", None)
        return super().copy(records, default=default)


class Move(EventKeyMixin, metaclass=PoolMeta):
    __name__ = "stock.move"

    @classmethod
    def __setup__(cls) -> None:
        super().__setup__()
        cls.__rpc__.update(
            {
                "plantbus_do": RPC(readonly=False, instantiate=0),
                "plantbus_cancel": RPC(readonly=False, instantiate=0),
            }
        )

    @classmethod
    def plantbus_cancel(cls, moves: list[Any]) -> None:
        """Cancel the moves that are still open, as one transaction."""
        with without_check_access():
            cls.cancel([move for move in moves if move.state in _OPEN_MOVE_STATES])

    @classmethod
    def plantbus_do(cls, moves: list[Any]) -> None:
        """Do the moves that are not done yet, as one transaction."""
        # The `do` button rejects draft moves that need an assignation. A
        # reported consumption already happened, so the move is done directly,
        # as Production.run does with its inputs.
        with without_check_access():
            cls.do([move for move in moves if move.state in _OPEN_MOVE_STATES])


class WorkCycle(EventKeyMixin, metaclass=PoolMeta):
    __name__ = "production.work.cycle"

    @classmethod
    def __setup__(cls) -> None:
        super().__setup__()
        cls.__rpc__.update({"plantbus_finish": RPC(readonly=False, instantiate=0)})

    @classmethod
    def plantbus_finish(cls, cycles: list[Any], seconds: float | None = None) -> None:
        """Run the draft cycles, set the duration of the running ones and do them."""
        # Without `seconds`, `do` sets the duration to the time since the
        # cycle was last modified, which is Tryton's own rule.
        with without_check_access():
            cls.run([cycle for cycle in cycles if cycle.state == "draft"])
            running = [c for c in cls.browse(cycles) if c.state == "running"]
            if seconds is not None:
                for cycle in running:
                    cycle.duration = dt.timedelta(seconds=seconds)
                cls.save(running)
            cls.do(running)

    plantbus_quantity = fields.Float(
        "Plantbus Quantity",
        help="The good quantity that the shop floor reported with this cycle.",
    )
    plantbus_scrap = fields.Float(
        "Plantbus Scrap",
        help="The scrapped quantity that the shop floor reported with this cycle.",
    )


class ShipmentIn(EventKeyMixin, metaclass=PoolMeta):
    __name__ = "stock.shipment.in"


class Production(EventKeyMixin, metaclass=PoolMeta):
    __name__ = "production"

    @classmethod
    def __setup__(cls) -> None:
        super().__setup__()
        cls.__rpc__.update(
            {
                "plantbus_release": RPC(readonly=False),
                "plantbus_run": RPC(readonly=False, instantiate=0),
                "plantbus_do": RPC(readonly=False, instantiate=0),
                "plantbus_post": RPC(readonly=False),
            }
        )

    @classmethod
    def plantbus_post(cls, events: list[dict[str, Any]]) -> list[str]:
        """Post plantbus events in this transaction; return one reference each."""
        from .postings import post_event

        return [post_event(event) for event in events]

    @classmethod
    def plantbus_run(cls, productions: list[Any]) -> None:
        """Release and run productions; cancel their planned, unposted inputs first."""
        pool = Pool()
        Move = pool.get("stock.move")

        with without_check_access():
            cls.wait([p for p in productions if p.state == "draft"])
            productions = cls.browse(productions)
            # The shop floor reports what it consumed, so `run` must not consume
            # the BOM plan as well. The cancelled moves keep the plan visible.
            Move.cancel(
                [
                    move
                    for production in productions
                    if production.state in {"waiting", "assigned"}
                    for move in production.inputs
                    if move.state in _OPEN_MOVE_STATES and not move.plantbus_event
                ]
            )
            cls.assign([p for p in productions if p.state == "waiting"])
            cls.run([p for p in cls.browse(productions) if p.state == "assigned"])

    @classmethod
    def plantbus_do(cls, productions: list[Any]) -> None:
        """Do the running productions, as one transaction."""
        with without_check_access():
            cls.do([p for p in productions if p.state == "running"])

    @classmethod
    def plantbus_release(cls, orders: list[dict[str, Any]]) -> list[int]:
        """Create productions from their BOM and routing, then release them."""
        pool = Pool()
        Product = pool.get("product.product")
        Location = pool.get("stock.location")
        company = Transaction().context.get("company")

        productions = []
        for order in orders:
            product = Product(order["product"])
            warehouse = Location(order["warehouse"])
            production = cls(
                company=company,
                warehouse=warehouse,
                location=warehouse.production_location,
                product=product,
                bom=order["bom"],
                routing=order.get("routing"),
                work_center=order.get("work_center"),
                unit=product.default_uom,
                quantity=order["quantity"],
                planned_date=order.get("planned_date"),
                planned_start_date=order.get("planned_start_date")
                or order.get("planned_date")
                or dt.date.today(),
                reference=order.get("reference"),
            )
            productions.append(production)
        cls.save(productions)

        # The same steps as the client: explode the BOM into planned moves,
        # then wait (which numbers the production and creates its works).
        cls.set_moves(productions)
        with without_check_access():
            cls.wait(productions)
            cls.assign_try(productions)
        return [production.id for production in productions]
