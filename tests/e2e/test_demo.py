"""The demo at reduced size, against a real trytond, checked against the simulator."""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path

import pytest
from rich.console import Console

from plantbus.demo import DemoOptions, run_demo

pytestmark = [pytest.mark.tryton, pytest.mark.slow]


async def test_demo_books_what_the_shop_floor_sent(tmp_path: Path) -> None:
    output = io.StringIO()
    console = Console(file=output, width=120)

    report = await run_demo(
        DemoOptions(orders_per_plant=2, workdir=tmp_path / "demo", seed=11), console
    )

    assert report.differences == []
    assert report.orders_total == 4
    assert report.orders_done == 4
    assert report.produced == report.expected_produced
    assert report.consumed == report.expected_consumed
    assert sum(report.produced.values()) > Decimal(0)
    # Every valid production posting reached Tryton; the unknown item did not.
    erp_types = ("production.workorder", "production.material", "production.goods")
    erp_events = sum(
        count
        for event_type, count in report.events_by_type.items()
        if event_type.startswith(erp_types)
    )
    assert report.erp_deliveries == erp_events - 1
    stages = sorted(stage for stage, _, _ in report.dead_letters)
    assert stages == ["deliver:erp", "ingest"]
    assert any("C-999" in reason for _, _, reason in report.dead_letters)
    assert len(report.rejected_at_ingest) == 1
    assert "data.quantity.value" in report.rejected_at_ingest[0]
    assert report.events_by_type["production.order.released.v1"] == 4
    assert "Tryton booked exactly what the shop floor reported." in output.getvalue()
