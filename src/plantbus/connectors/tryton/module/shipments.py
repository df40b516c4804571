# mypy: ignore-errors
# trytond ships no type information and assembles model classes at run time
# through its pool, so static checks of this module only report noise.
"""Post a `supply.asn.received.v1` event as a supplier shipment in Tryton.

One event becomes one `stock.shipment.in` in state draft, with one incoming
move per ASN line from the supplier's location into the warehouse input, and
the event id in `plantbus_event`. The shipment waits there for the goods: a
user (or a later event) receives it when the truck arrives. The supplier is
the party whose code is `data.supplier`, else the party whose name is
`data.supplier_name` or `data.supplier`; items are products by code.
The warehouse is the one whose code is the event's `plant`, else the first
warehouse. The ASN id is the shipment's reference and lots become Tryton lots.

NOTE: purchase orders, serial numbers and SSCCs are not posted: the Tryton
modules that would hold them (purchase, stock_package) are not installed in
the demo ERP, so they stay in the event only.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from trytond.exceptions import UserError
from trytond.transaction import Transaction


def post_asn_received(posting: Any) -> str:
    """Create the draft supplier shipment of an ASN, or return the existing one."""
    existing = posting.posted("stock.shipment.in")
    if existing is not None:
        return f"stock.shipment.in,{existing.id}"

    pool = posting.pool
    Shipment = pool.get("stock.shipment.in")
    Move = pool.get("stock.move")
    Company = pool.get("company.company")
    data = posting.data
    company = Company(Transaction().context["company"])
    supplier = _supplier(posting)
    warehouse = _warehouse(posting)
    planned = posting.date("expected_at") or posting.date("ship_date")

    moves = []
    for index, line in enumerate(data["lines"]):
        product = _product(posting, index, line)
        quantity, unit = _quantity(posting, index, line, product)
        move = Move(
            product=product,
            unit=unit,
            quantity=quantity,
            from_location=supplier.supplier_location,
            to_location=warehouse.input_location,
            company=company,
            currency=company.currency,
            unit_price=product.cost_price or Decimal(0),
            planned_date=planned,
        )
        if line.get("lot"):
            move.lot = posting.lot(line["lot"], product)
        moves.append(move)

    shipment = Shipment(
        company=company,
        supplier=supplier,
        warehouse=warehouse,
        warehouse_input=warehouse.input_location,
        warehouse_storage=warehouse.storage_location,
        reference=data["asn_id"],
        planned_date=planned or dt.date.today(),
        incoming_moves=moves,
        plantbus_event=posting.id,
    )
    shipment.save()
    return f"stock.shipment.in,{shipment.id}"


def _supplier(posting: Any) -> Any:
    Party = posting.pool.get("party.party")
    code = posting.data["supplier"]
    found = Party.search([("code", "=", code)], limit=1)
    if not found:
        name = posting.data.get("supplier_name") or code
        found = Party.search([("name", "=", name)], order=[("id", "ASC")], limit=1)
    if not found:
        raise UserError(
            f"Event {posting.id!r} field `data.supplier` is {code!r}: no Tryton "
            "party has this code, and none has the supplier's name; create the "
            "supplier party with this code, then redrive the event."
        )
    return found[0]


def _warehouse(posting: Any) -> Any:
    Location = posting.pool.get("stock.location")
    plant = posting.event.get("plant")
    domain = [("type", "=", "warehouse")]
    if plant:
        found = Location.search([*domain, ("code", "=", plant)], limit=1)
        if not found:
            raise UserError(
                f"Event {posting.id!r} attribute `plant` is {plant!r}: no Tryton "
                "warehouse has this code; set the source's `plant` to a "
                "warehouse code such as 'P1'."
            )
        return found[0]
    found = Location.search(domain, order=[("id", "ASC")], limit=1)
    if not found:
        raise UserError("Tryton has no warehouse to receive the shipment in.")
    return found[0]


def _product(posting: Any, index: int, line: dict[str, Any]) -> Any:
    Product = posting.pool.get("product.product")
    code = line["item"]
    found = Product.search([("code", "=", code)], limit=1)
    if not found:
        raise UserError(
            f"Event {posting.id!r} field `data.lines[{index}].item` is {code!r}: "
            "no Tryton product has this code; create the product or map the "
            "supplier's item code onto yours, then redrive the event."
        )
    return found[0]


def _quantity(
    posting: Any, index: int, line: dict[str, Any], product: Any
) -> tuple[float, Any]:
    Uom = posting.pool.get("product.uom")
    symbol = line["quantity"]["unit"]
    units = Uom.search([("symbol", "=", symbol)], limit=1)
    field = f"data.lines[{index}].quantity.unit"
    if not units:
        raise UserError(
            f"Event {posting.id!r} field `{field}` is {symbol!r}: no Tryton unit "
            "of measure has this symbol; add it to the source's unit table or to "
            "Tryton."
        )
    if units[0].category != product.default_uom.category:
        raise UserError(
            f"Event {posting.id!r} field `{field}` is {symbol!r}: item "
            f"{product.code!r} is measured in {product.default_uom.symbol!r}, "
            "which cannot be converted from that unit."
        )
    return float(Decimal(line["quantity"]["value"])), units[0]
