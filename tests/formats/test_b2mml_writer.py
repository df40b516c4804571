"""The B2MML V0600 writers, and parse_b2mml rules shown on written documents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import xmlschema

from plantbus.errors import FormatError
from plantbus.formats.b2mml import (
    MaterialLine,
    parse_b2mml,
    write_production_performance,
    write_production_schedule,
)

START = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
END = START + timedelta(hours=2, minutes=30)


def _performance() -> bytes:
    return write_production_performance(
        work_order_id="WO-1001",
        produced=MaterialLine("FG-100", Decimal("12.5"), "kg", lot="LOT-77"),
        consumed=[
            MaterialLine("RM-1", Decimal("3.250"), "kg", lot="RL-5"),
            MaterialLine("RM-2", Decimal("40"), "u"),
        ],
        started_at=START,
        ended_at=END,
        operation="mixing",
    )


def _xsd(b2mml_xsd: Path, kind: str) -> xmlschema.XMLSchema10:
    return xmlschema.XMLSchema10(str(b2mml_xsd / "V0600" / f"B2MML-V0600-{kind}.xsd"))


def test_write_production_performance_validates_against_xsd(b2mml_xsd: Path) -> None:
    schema = _xsd(b2mml_xsd, "ProductionPerformance")

    errors = list(schema.iter_errors(_performance()))

    assert errors == []


def test_write_production_performance_round_trips(b2mml_xsd: Path) -> None:
    events = parse_b2mml(_performance(), "wo-1001.xml", b2mml_xsd, plant="PLANT-1")

    by_type: dict[str, list[dict[str, object]]] = {}
    for event in events:
        by_type.setdefault(event.type, []).append(event.data)
    assert [e.type for e in events] == [
        "production.material.consumed.v1",
        "production.material.consumed.v1",
        "production.goods.produced.v1",
        "production.workorder.completed.v1",
    ]
    assert by_type["production.workorder.completed.v1"] == [
        {
            "work_order_id": "WO-1001",
            "order_id": "WO-1001",
            "item": "FG-100",
            "quantity": {"value": "12.5", "unit": "kg"},
            "lot": "LOT-77",
            "completed_at": "2026-03-02T08:30:00Z",
        }
    ]
    assert by_type["production.goods.produced.v1"] == [
        {
            "work_order_id": "WO-1001",
            "item": "FG-100",
            "quantity": {"value": "12.5", "unit": "kg"},
            "lot": "LOT-77",
            "produced_at": "2026-03-02T08:30:00Z",
        }
    ]
    assert by_type["production.material.consumed.v1"] == [
        {
            "work_order_id": "WO-1001",
            "item": "RM-1",
            "quantity": {"value": "3.250", "unit": "kg"},
            "lot": "RL-5",
            "operation": "mixing",
            "consumed_at": "2026-03-02T08:30:00Z",
        },
        {
            "work_order_id": "WO-1001",
            "item": "RM-2",
            "quantity": {"value": "40", "unit": "u"},
            "operation": "mixing",
            "consumed_at": "2026-03-02T08:30:00Z",
        },
    ]
    assert {e.partitionkey for e in events} == {"WO-1001"}
    assert {e.plant for e in events} == {"PLANT-1"}
    assert len({e.id for e in events}) == 4


def test_write_production_schedule_round_trips(b2mml_xsd: Path) -> None:
    document = write_production_schedule(
        order_id="MO-7",
        product=MaterialLine("FG-100", Decimal("250"), "u"),
        planned_start=START,
        planned_end=END,
        plant="SITE-NORTH",
        description="Rush order",
    )

    assert list(_xsd(b2mml_xsd, "ProductionSchedule").iter_errors(document)) == []
    # No plant is configured, so it comes from the Site-level HierarchyScope.
    [event] = parse_b2mml(document, "mo-7.xml", b2mml_xsd)
    assert event.type == "production.order.released.v1"
    assert event.data == {
        "order_id": "MO-7",
        "item": "FG-100",
        "quantity": {"value": "250", "unit": "u"},
        "plant": "SITE-NORTH",
        "planned_start": "2026-03-02T06:00:00Z",
        "planned_end": "2026-03-02T08:30:00Z",
        "description": "Rush order",
    }
    assert event.plant == "SITE-NORTH"


def test_write_production_performance_rejects_naive_time() -> None:
    with pytest.raises(ValueError, match="has no timezone"):
        write_production_performance(
            work_order_id="WO-1",
            produced=MaterialLine("FG", Decimal("1"), "u"),
            started_at=datetime(2026, 3, 2, 6, 0),
            ended_at=END,
        )


def test_write_production_performance_rejects_negative_quantity() -> None:
    with pytest.raises(ValueError, match="zero or more"):
        write_production_performance(
            work_order_id="WO-1",
            produced=MaterialLine("FG", Decimal("-1"), "u"),
            started_at=START,
            ended_at=END,
        )


def test_parse_b2mml_negative_produced_quantity_rejected(b2mml_xsd: Path) -> None:
    document = _performance().replace(
        b"<QuantityString>12.5<", b"<QuantityString>-12.5<"
    )

    with pytest.raises(FormatError) as caught:
        parse_b2mml(document, "neg.xml", b2mml_xsd)

    [problem] = caught.value.problems
    assert problem.location.endswith(
        "/SegmentResponse/MaterialActual[1]/Quantity/QuantityString"
    )
    assert problem.details["value"] == "-12.5"
    assert "is negative" in problem.message


def test_parse_b2mml_quantity_not_decimal_rejected(b2mml_xsd: Path) -> None:
    # QuantityString is a plain string in the XSD, so only plantbus can catch it.
    document = _performance().replace(
        b"<QuantityString>3.250<", b"<QuantityString>3,250<"
    )

    with pytest.raises(FormatError) as caught:
        parse_b2mml(document, "comma.xml", b2mml_xsd)

    [problem] = caught.value.problems
    assert problem.location.endswith("/MaterialActual[2]/Quantity/QuantityString")
    assert problem.details["value"] == "3,250"
    assert "is not a decimal number" in problem.message


def test_parse_b2mml_local_time_without_tz(b2mml_xsd: Path) -> None:
    document = _performance().replace(b":00Z<", b":00<")

    with pytest.raises(FormatError) as caught:
        parse_b2mml(document, "local.xml", b2mml_xsd)

    messages = " ".join(p.message for p in caught.value.problems)
    assert "has no UTC offset" in messages
    assert "`default_tz`" in messages


def test_parse_b2mml_local_time_default_tz(b2mml_xsd: Path) -> None:
    document = _performance().replace(b":00Z<", b":00<")

    events = parse_b2mml(
        document, "local.xml", b2mml_xsd, default_tz=ZoneInfo("Europe/Berlin")
    )

    completed = events[-1]
    # 08:30 in Berlin in March (CET, UTC+1) is 07:30 UTC.
    assert completed.data["completed_at"] == "2026-03-02T07:30:00Z"
    assert completed.time == "2026-03-02T07:30:00Z"


def test_parse_b2mml_end_before_start_rejected(b2mml_xsd: Path) -> None:
    document = _performance().replace(
        b"<ActualEndTime>2026-03-02T08:30:00Z<", b"<ActualEndTime>2026-03-02T05:00:00Z<"
    )

    with pytest.raises(FormatError) as caught:
        parse_b2mml(document, "backwards.xml", b2mml_xsd)

    [problem] = caught.value.problems
    assert problem.location.endswith("/SegmentResponse/ActualEndTime")
    assert "must not be before ActualStartTime" in problem.message


def test_parse_b2mml_unit_too_long(b2mml_xsd: Path) -> None:
    document = _performance().replace(
        b"<UnitOfMeasure>u<", b"<UnitOfMeasure>pieces-of-something-long<"
    )

    with pytest.raises(FormatError) as caught:
        parse_b2mml(document, "unit.xml", b2mml_xsd)

    [problem] = caught.value.problems
    assert problem.location.endswith("/SegmentResponse/MaterialActual[3]")
    assert "data.quantity.unit" in problem.message
    assert "maxLength 16" in problem.message


def test_parse_b2mml_doctype_rejected_without_expansion(b2mml_xsd: Path) -> None:
    document = (
        _performance()
        .replace(
            b"<ProcessProductionPerformance",
            b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>\n'
            b"<ProcessProductionPerformance",
            1,
        )
        .replace(b"<ID>WO-1001<", b"<ID>&e;<", 1)
    )

    with pytest.raises(FormatError) as caught:
        parse_b2mml(document, "entity.xml", b2mml_xsd)

    assert "DOCTYPE" in str(caught.value)
    assert "root:" not in str(caught.value)


def test_parse_b2mml_malformed_xml_names_line(b2mml_xsd: Path) -> None:
    with pytest.raises(FormatError) as caught:
        parse_b2mml(b"<a>\n<b>\n</a>", "broken.xml", b2mml_xsd)

    [problem] = caught.value.problems
    assert problem.line == 3
    assert "not well-formed" in problem.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "99999999999-03-02T06:00:00Z",
            "'99999999999-03-02T06:00:00Z' is a date outside the years 1 to 9999 "
            "that plantbus can read; correct the year",
        ),
        (
            "0001-01-01T00:00:00+14:00",
            "'0001-01-01T00:00:00+14:00' is outside the years 1 to 9999 in UTC "
            "that plantbus can store",
        ),
        (
            "9999-12-31T23:59:59-14:00",
            "'9999-12-31T23:59:59-14:00' is outside the years 1 to 9999 in UTC "
            "that plantbus can store",
        ),
    ],
    ids=["long-year", "before-year-1", "after-year-9999"],
)
def test_parse_b2mml_time_out_of_range_rejected(
    b2mml_xsd: Path, text: str, message: str
) -> None:
    document = _performance().replace(
        b"<CreationDateTime>2026-03-02T08:30:00Z<",
        f"<CreationDateTime>{text}<".encode(),
        1,
    )
    assert text.encode() in document

    with pytest.raises(FormatError) as caught:
        parse_b2mml(document, "time.xml", b2mml_xsd)

    [problem] = caught.value.problems
    assert (
        problem.location
        == "/ProcessProductionPerformance/ApplicationArea/CreationDateTime"
    )
    assert problem.line == 4
    assert problem.message == message
