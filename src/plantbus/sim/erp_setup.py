"""The demo ERP: a Tryton SQLite database with a small two-plant manufacturer.

Building a database runs `trytond-admin` for the modules below, the slow step
at tens of seconds, and then `plantbus.sim.erp_data` in a subprocess. The result
is kept as a template under the cache folder, keyed by the installed trytond
module versions and a hash of the code that builds it (`erp_data` and the
plantbus Tryton module), so every later database is a file copy.

The master data has one company and two plants, `P1` and `P2`. Each plant is a
warehouse with input, output, storage, production and scrap locations and its
own work centers. Finished goods `FG-100`..`FG-104` have a BOM and a routing of
2 or 3 steps each. Components `C-200`..`C-209` have opening stock in both
plants, in two lots each. Production orders are released over RPC with
`release_orders` while the server runs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import importlib.metadata
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from plantbus.connectors.tryton.client import TrytonClient
from plantbus.sim import erp_data
from plantbus.sim.trytond_server import (
    ADMIN_PASSWORD,
    free_port,
    trytond_executable,
    write_config,
)

logger = logging.getLogger("plantbus.sim.tryton")

MODULES = (
    "production",
    "production_work",
    "production_routing",
    "stock",
    "stock_lot",
    "stock_supply",
    "purchase_request",
    "quality",
    "plantbus",
)
_DISTRIBUTIONS = (
    "trytond",
    "trytond_production",
    "trytond_production_work",
    "trytond_production_routing",
    "trytond_stock",
    "trytond_stock_lot",
    "trytond_stock_supply",
    "trytond_purchase_request",
    "trytond_quality",
)


def default_cache_dir() -> Path:
    """Return the template folder: $PLANTBUS_CACHE or ~/.cache/plantbus."""
    configured = os.environ.get("PLANTBUS_CACHE")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "plantbus"


def template_key() -> str:
    """Return a hash of the module versions and the code that builds the database."""
    digest = hashlib.sha256()
    for name in _DISTRIBUTIONS:
        digest.update(f"{name}=={importlib.metadata.version(name)}\n".encode())
    digest.update(" ".join(MODULES).encode())
    digest.update(ADMIN_PASSWORD.encode())
    module_dir = (
        Path(__file__).resolve().parents[1] / "connectors" / "tryton" / "module"
    )
    sources = [Path(erp_data.__file__), *sorted(module_dir.iterdir())]
    for path in sources:
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def template_path(cache_dir: Path | None = None) -> Path:
    """Return the path of the template database for the current key."""
    folder = cache_dir or default_cache_dir()
    return folder / f"tryton-{template_key()}.sqlite"


def build_template(cache_dir: Path | None = None, *, force: bool = False) -> Path:
    """Build the template database unless the cache already contains it."""
    target = template_path(cache_dir)
    if target.exists() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    with tempfile.TemporaryDirectory(prefix="plantbus-tryton-build-") as folder:
        work = Path(folder)
        name = "template"
        (work / f"{name}.sqlite").touch()
        config = write_config(work, work, free_port())
        password_file = work / "password"
        password_file.write_text(ADMIN_PASSWORD, encoding="utf-8")
        env = {**os.environ, "TRYTONPASSFILE": str(password_file)}
        log_path = work / "build.log"
        with log_path.open("wb") as log:
            # An empty line answers trytond-admin's question for the admin email.
            admin = subprocess.run(
                [
                    trytond_executable("trytond-admin"),
                    "-c",
                    str(config),
                    "-d",
                    name,
                    "-u",
                    *MODULES,
                    "--activate-dependencies",
                ],
                input=b"\n",
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                check=False,
            )
            if admin.returncode == 0:
                data = subprocess.run(
                    [sys.executable, "-m", "plantbus.sim.erp_data", str(config), name],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    check=False,
                )
        if admin.returncode != 0 or data.returncode != 0:
            output = log_path.read_text("utf-8", "replace")[-3000:]
            raise RuntimeError(
                f"Building the Tryton template database failed; the end of the "
                f"build log follows.\n{output}"
            )
        # Write under a temporary name first so that a crash leaves no half file.
        partial = target.with_suffix(f".{os.getpid()}.partial")
        shutil.copyfile(work / f"{name}.sqlite", partial)
        partial.replace(target)
    logger.info(
        "Built Tryton template %s in %.1f s", target, time.monotonic() - started
    )
    return target


def create_database(
    folder: Path, name: str = "plantbus", cache_dir: Path | None = None
) -> Path:
    """Create database `name` in `folder` as a copy of the template; return its file."""
    template = build_template(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.sqlite"
    shutil.copyfile(template, target)
    # trytond opens SQLite in rollback-journal mode, where a writer and the
    # readers block each other. The WAL mode is stored in the file, so every
    # trytond connection then reads while the sink posts.
    with contextlib.closing(sqlite3.connect(target)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
    return target


async def master_data(client: TrytonClient) -> dict[str, Any]:
    """Return the ids that `release_orders` needs: warehouses, products, BOMs."""
    warehouses = await client.search_read(
        "stock.location",
        [("type", "=", "warehouse"), ("code", "in", erp_data.PLANTS)],
        ["code"],
    )
    products = await client.search_read(
        "product.product", [("code", "like", "FG-%")], ["code", "boms"]
    )
    links = await client.search_read(
        "product.product-production.bom",
        [("product", "in", [product["id"] for product in products])],
        ["product", "bom"],
    )
    routings = await client.search_read("production.routing", [], ["boms"])
    centers = await client.search_read(
        "production.work.center", [("parent", "=", None)], ["warehouse"]
    )
    bom_of = {link["product"]: link["bom"] for link in links}
    routing_of = {bom: routing["id"] for routing in routings for bom in routing["boms"]}
    return {
        "warehouses": {row["code"]: row["id"] for row in warehouses},
        "work_centers": {row["warehouse"]: row["id"] for row in centers},
        "products": {
            row["code"]: {
                "id": row["id"],
                "bom": bom_of[row["id"]],
                "routing": routing_of.get(bom_of[row["id"]]),
            }
            for row in products
        },
    }


async def release_orders(
    client: TrytonClient,
    plant: str,
    count: int,
    *,
    items: list[str] | None = None,
    quantity: Decimal = Decimal("10"),
    start: dt.date | None = None,
) -> list[str]:
    """Release `count` production orders in `plant` and return their numbers.

    Orders cycle through `items` (default: every finished good). Each order is
    planned one day after the previous one, from `start` (default: today).
    """
    if count < 1:
        return []
    data = await master_data(client)
    if plant not in data["warehouses"]:
        raise ValueError(
            f"Plant {plant!r} is not a warehouse code of the demo ERP; "
            f"use one of {sorted(data['warehouses'])}."
        )
    warehouse = data["warehouses"][plant]
    codes = items or sorted(data["products"])
    start = start or dt.date.today()
    orders = []
    for index in range(count):
        product = data["products"][codes[index % len(codes)]]
        orders.append(
            {
                "product": product["id"],
                "bom": product["bom"],
                "routing": product["routing"],
                "warehouse": warehouse,
                "work_center": data["work_centers"][warehouse],
                "quantity": float(quantity),
                "planned_start_date": start + dt.timedelta(days=index),
                "planned_date": start + dt.timedelta(days=index + 1),
            }
        )
    ids = await client.execute("production", "plantbus_release", orders)
    rows = await client.read("production", ids, ["number"])
    return [row["number"] for row in rows]
