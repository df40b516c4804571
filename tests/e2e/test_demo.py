"""The demo at reduced size, against a real trytond, checked against the simulator."""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path

import pytest
from rich.console import Console

from plantbus.demo import DemoOptions, run_demo
from plantbus.demo_backends import BackboneKind, DemoBackends, StateKind

from ..backbone.nats_servers import machine_nats
from ..state.conftest import SERVER_DSN
from ..test_demo_backends import database_exists, stream_exists

pytestmark = [pytest.mark.tryton, pytest.mark.slow]


@pytest.mark.parametrize(
    ("backbone", "state"), [("embedded", "sqlite"), ("jetstream", "postgres")]
)
async def test_demo_books_what_the_shop_floor_sent(
    tmp_path: Path, backbone: BackboneKind, state: StateKind
) -> None:
    output = io.StringIO()
    console = Console(file=output, width=120)
    backends = DemoBackends(backbone=backbone, state=state)
    if backbone == "jetstream":
        backends.nats_url = machine_nats()
    backends.postgres_dsn = SERVER_DSN

    report = await run_demo(
        DemoOptions(
            orders_per_plant=2, workdir=tmp_path / "demo", seed=11, backends=backends
        ),
        console,
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
    # Support discarded the dead letter; the events its work order held back
    # meanwhile were then delivered, which the matching totals above confirm.
    assert "Plant support (played by the demo) discarded" in output.getvalue()
    # The run used the chosen backends, each of its own, and removed them.
    if backbone == "jetstream":
        assert report.stream is not None
        assert f"JetStream stream {report.stream!r}" in report.backends
        assert not await stream_exists(backends.nats_url, report.stream)
    else:
        assert report.stream is None
    if state == "postgres":
        assert report.database is not None
        assert f"PostgreSQL database {report.database!r}" in report.backends
        assert not database_exists(report.database)
    else:
        assert report.database is None
