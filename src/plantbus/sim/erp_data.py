"""The demo manufacturer's master data, written inside a trytond process.

Run as `python -m plantbus.sim.erp_data CONFIG DATABASE` on a database that
trytond-admin has just created; `plantbus.sim.erp_setup` does this for you.
Importing this module does not import trytond, so that the hub process keeps
its own state clear of trytond's process-wide configuration and pool.
"""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

PLANTS = ("P1", "P2")
COMPANY_NAME = "Plantbus Demo Manufacturing"


@dataclass(frozen=True)
class Item:
    """A product of the demo: code, name, unit of measure XML id and cost."""

    code: str
    name: str
    uom: str
    cost: Decimal


FINISHED_GOODS = (
    Item("FG-100", "Hydraulic pump HP-1", "uom_unit", Decimal("180.00")),
    Item("FG-101", "Gear motor GM-2", "uom_unit", Decimal("240.00")),
    Item("FG-102", "Control cabinet CC-3", "uom_unit", Decimal("610.00")),
    Item("FG-103", "Conveyor module CV-4", "uom_unit", Decimal("420.00")),
    Item("FG-104", "Valve block VB-5", "uom_unit", Decimal("95.00")),
)
COMPONENTS = (
    Item("C-200", "Steel housing", "uom_unit", Decimal("22.50")),
    Item("C-201", "Shaft 20 mm", "uom_unit", Decimal("8.40")),
    Item("C-202", "Ball bearing 6204", "uom_unit", Decimal("3.10")),
    Item("C-203", "Electric motor 1.5 kW", "uom_unit", Decimal("95.00")),
    Item("C-204", "Gearbox 1:20", "uom_unit", Decimal("70.00")),
    Item("C-205", "Sheet steel", "uom_kilogram", Decimal("1.80")),
    Item("C-206", "Cable 3x1.5", "uom_meter", Decimal("0.90")),
    Item("C-207", "PLC controller", "uom_unit", Decimal("210.00")),
    Item("C-208", "Conveyor belt", "uom_meter", Decimal("14.00")),
    Item("C-209", "Aluminium block", "uom_kilogram", Decimal("6.50")),
)

# Bill of materials per finished good: (component code, quantity per unit).
BOMS: dict[str, tuple[tuple[str, str], ...]] = {
    "FG-100": (("C-200", "1"), ("C-201", "1"), ("C-202", "2"), ("C-203", "1")),
    "FG-101": (("C-203", "1"), ("C-204", "1"), ("C-201", "1"), ("C-202", "2")),
    "FG-102": (("C-205", "12.5"), ("C-206", "8"), ("C-207", "1")),
    "FG-103": (("C-208", "3"), ("C-203", "1"), ("C-202", "4"), ("C-205", "6")),
    "FG-104": (("C-209", "1.2"), ("C-202", "1")),
}

# Work center categories with their hourly cost; every plant has one work
# center per category.
WORK_CENTER_CATEGORIES = {
    "Machining": Decimal("85.00"),
    "Assembly": Decimal("60.00"),
    "Wiring": Decimal("55.00"),
    "Test": Decimal("70.00"),
}

# Routing per finished good: operation names, each done in the work center
# category of the same name as its first word.
ROUTINGS: dict[str, tuple[str, ...]] = {
    "FG-100": ("Machining", "Assembly", "Test"),
    "FG-101": ("Machining", "Assembly"),
    "FG-102": ("Assembly", "Wiring", "Test"),
    "FG-103": ("Assembly", "Test"),
    "FG-104": ("Machining", "Test"),
}

# Opening stock of every component in each plant, in two lots.
OPENING_LOT_QUANTITY = Decimal("5000")


def populate(pool: Any) -> None:
    """Create the company, plants, items, BOMs, routings and opening stock."""
    from trytond.transaction import Transaction  # type: ignore[import-untyped]

    company = _create_company(pool)
    with Transaction().set_context(company=company.id, companies=[company.id]):
        _number_productions(pool)
        items = _create_items(pool)
        boms = _create_boms(pool, items)
        _create_routings(pool, boms)
        warehouses = {plant: _create_plant(pool, plant) for plant in PLANTS}
        _create_work_centers(pool, company, warehouses)
        _receive_opening_stock(pool, company, items, warehouses)


def _create_company(pool: Any) -> Any:
    Currency = pool.get("currency.currency")
    Party = pool.get("party.party")
    Company = pool.get("company.company")
    User = pool.get("res.user")

    currency = Currency(
        name="Euro", code="EUR", symbol="€", digits=2, rounding=Decimal("0.01")
    )
    currency.save()
    party = Party(name=COMPANY_NAME)
    party.save()
    company = Company(party=party, currency=currency, timezone="UTC")
    company.save()
    admins = User.search([("login", "=", "admin")])
    User.write(admins, {"companies": [("add", [company.id])], "company": company.id})
    return company


def _number_productions(pool: Any) -> None:
    # Work order numbers such as MO-00001 read better in events than Tryton's
    # default plain counter.
    Configuration = pool.get("production.configuration")
    sequence = Configuration(1).production_sequence
    sequence.prefix = "MO-"
    sequence.padding = 5
    sequence.save()


def _create_items(pool: Any) -> dict[str, Any]:
    Template = pool.get("product.template")
    Product = pool.get("product.product")
    ModelData = pool.get("ir.model.data")

    templates = []
    for item in (*FINISHED_GOODS, *COMPONENTS):
        uom = ModelData.get_id("product", item.uom)
        template = Template(
            name=item.name,
            code=item.code,
            type="goods",
            default_uom=uom,
            list_price=item.cost * 2,
            producible=item.code.startswith("FG-"),
        )
        templates.append(template)
    Template.save(templates)

    products = []
    for template, item in zip(templates, (*FINISHED_GOODS, *COMPONENTS), strict=True):
        products.append(Product(template=template, cost_price=item.cost))
    Product.save(products)
    return {product.code: product for product in products}


def _create_boms(pool: Any, items: dict[str, Any]) -> dict[str, Any]:
    BOM = pool.get("production.bom")
    BOMInput = pool.get("production.bom.input")
    BOMOutput = pool.get("production.bom.output")

    boms = {}
    for code, lines in BOMS.items():
        product = items[code]
        bom = BOM(name=f"BOM {code}", code=f"BOM-{code}")
        bom.inputs = [
            BOMInput(
                product=items[component],
                unit=items[component].default_uom,
                quantity=float(quantity),
            )
            for component, quantity in lines
        ]
        bom.outputs = [
            BOMOutput(product=product, unit=product.default_uom, quantity=1.0)
        ]
        boms[code] = bom
    BOM.save(list(boms.values()))

    ProductBom = pool.get("product.product-production.bom")
    ProductBom.save(
        [
            ProductBom(product=items[code], bom=bom, sequence=10)
            for code, bom in boms.items()
        ]
    )
    return boms


def _create_routings(pool: Any, boms: dict[str, Any]) -> None:
    Category = pool.get("production.work.center.category")
    Operation = pool.get("production.routing.operation")
    Routing = pool.get("production.routing")
    Step = pool.get("production.routing.step")

    categories = {name: Category(name=name) for name in WORK_CENTER_CATEGORIES}
    Category.save(list(categories.values()))
    operations = {
        name: Operation(name=name, work_center_category=categories[name])
        for name in WORK_CENTER_CATEGORIES
    }
    Operation.save(list(operations.values()))

    routings = []
    for code, steps in ROUTINGS.items():
        routing = Routing(name=f"Routing {code}", boms=[boms[code]])
        routing.steps = [
            Step(operation=operations[name], sequence=10 * (index + 1))
            for index, name in enumerate(steps)
        ]
        routings.append(routing)
    Routing.save(routings)


def _create_plant(pool: Any, plant: str) -> Any:
    Location = pool.get("stock.location")

    def zone(name: str, suffix: str, kind: str) -> Any:
        return Location(name=f"{plant} {name}", code=f"{plant}-{suffix}", type=kind)

    input_zone = zone("Input", "IN", "storage")
    output_zone = zone("Output", "OUT", "storage")
    storage = zone("Storage", "STO", "storage")
    production = zone("Production", "PROD", "production")
    waste = zone("Scrap", "SCRAP", "lost_found")
    Location.save([input_zone, output_zone, storage, production, waste])

    warehouse = Location(
        name=f"Plant {plant}",
        code=plant,
        type="warehouse",
        input_location=input_zone,
        output_location=output_zone,
        storage_location=storage,
        production_location=production,
        waste_locations=[waste],
    )
    warehouse.save()
    # Tryton keeps production locations outside the warehouse tree.
    Location.write([input_zone, output_zone, storage], {"parent": warehouse.id})
    return warehouse


def _create_work_centers(pool: Any, company: Any, warehouses: dict[str, Any]) -> None:
    Category = pool.get("production.work.center.category")
    WorkCenter = pool.get("production.work.center")

    categories = {category.name: category for category in Category.search([])}
    for plant, warehouse in warehouses.items():
        root = WorkCenter(
            name=f"{plant} Shop floor",
            company=company,
            warehouse=warehouse,
            cost_method="hour",
            cost_price=Decimal("0"),
        )
        root.save()
        WorkCenter.save(
            [
                WorkCenter(
                    name=f"{plant} {name}",
                    parent=root,
                    category=categories[name],
                    company=company,
                    warehouse=warehouse,
                    cost_method="hour",
                    cost_price=cost,
                )
                for name, cost in WORK_CENTER_CATEGORIES.items()
            ]
        )


def _receive_opening_stock(
    pool: Any, company: Any, items: dict[str, Any], warehouses: dict[str, Any]
) -> None:
    Move = pool.get("stock.move")
    Lot = pool.get("stock.lot")
    Location = pool.get("stock.location")

    (supplier,) = Location.search([("type", "=", "supplier")], limit=1)
    lots = []
    moves = []
    for plant, warehouse in warehouses.items():
        for item in COMPONENTS:
            product = items[item.code]
            for index in (1, 2):
                lot = Lot(number=f"{plant}-{item.code}-L{index}", product=product)
                lots.append(lot)
                moves.append(
                    Move(
                        product=product,
                        unit=product.default_uom,
                        quantity=float(OPENING_LOT_QUANTITY),
                        from_location=supplier,
                        to_location=warehouse.storage_location,
                        lot=lot,
                        company=company,
                        unit_price=item.cost,
                        currency=company.currency,
                        effective_date=dt.date.today(),
                    )
                )
    Lot.save(lots)
    Move.save(moves)
    Move.do(moves)


def main(argv: list[str]) -> None:
    """Populate the database named in `argv` with the demo manufacturer."""
    config_file, database = argv
    from trytond.config import config  # type: ignore[import-untyped]

    config.update_etc(config_file)

    from trytond.pool import Pool  # type: ignore[import-untyped]
    from trytond.transaction import Transaction

    Pool.start()
    pool = Pool(database)
    pool.init()
    with Transaction().start(database, 0, context={"active_test": False}):
        populate(pool)


if __name__ == "__main__":
    main(sys.argv[1:])
