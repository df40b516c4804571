"""parse_b2mml against the public B2MML sample documents.

The expected values below were read from the sample files by hand.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pytest

from plantbus.errors import ConfigError, FormatError
from plantbus.events.catalogue import Catalogue
from plantbus.events.envelope import Event
from plantbus.formats.b2mml import parse_b2mml
from plantbus.formats.b2mml.documents import compiled_schema

COCOP = "b2mml/examples/cocop_v0600"
COURBON = "b2mml/examples/mesa_courbon_v0401"
THIRD_PARTY = "b2mml/examples/third_party"
BATCHML = "b2mml/examples/mesa_batchml"


@dataclass(frozen=True)
class Release:
    order_id: str
    item: str
    value: str
    unit: str
    planned_start: str | None
    planned_end: str | None


SCHEDULES = {
    f"{COCOP}/ProcessProductionSchedule.xml": [
        # Two quantities: 41.9 t/h (a rate, keyed ProdRate) and 11.9 t (amount).
        Release(
            "my-identifier-1",
            "matte",
            "11.9",
            "t",
            "2019-04-24T15:00:00Z",
            "2019-04-24T16:00:00Z",
        ),
        # my-identifier-2 has no produced material, so it is skipped.
    ],
    f"{COCOP}/ProcessProductionSchedule_EmptyItems.xml": [],
    f"{COCOP}/ProcessProductionSchedule_EmptySched.xml": [],
    f"{COURBON}/PRO-20121210181416-27942.xml": [
        Release("258456", "SO1215", "1.000", "KG", None, None),
    ],
}

# Negative samples: the element path the error must name and a piece of the rule.
NEGATIVES = {
    "Neg_ProcessProductionSchedule_EndBeforeStart.xml": (
        "/ProductionRequest/SegmentRequirement/LatestEndTime",
        "must not be before EarliestStartTime",
    ),
    "Neg_ProcessProductionSchedule_InvalidCreationTime.xml": (
        "/ApplicationArea/CreationDateTime",
        "is not a valid xs:dateTime value",
    ),
    "Neg_ProcessProductionSchedule_InvalidDate.xml": (
        "/SegmentRequirement/EarliestStartTime",
        "is not a valid xs:dateTime value",
    ),
    "Neg_ProcessProductionSchedule_InvalidEqElemLevel.xml": (
        "/ProductionRequest[2]/HierarchyScope/EquipmentElementLevel",
        "value must be one of",
    ),
    "Neg_ProcessProductionSchedule_InvalidMatUse.xml": (
        "/ProductionRequest[3]/SegmentRequirement/MaterialRequirement/MaterialUse",
        "value must be one of",
    ),
    "Neg_ProcessProductionSchedule_InvalidQuantityDataType.xml": (
        "/MaterialRequirement/Quantity/DataType",
        "value must be one of",
    ),
}

# Samples that break the XSD without a Neg_ prefix in their name.
INVALID_SAMPLES = {
    # The ext:SchedulingParameters extension is not part of the V0600 XSD.
    f"{COCOP}/ProcessProductionSchedule_SchedulingParams.xml": (
        "/ProcessProductionSchedule/DataArea/ProductionSchedule/ProductionRequest",
        "Unexpected child with tag 'ext:SchedulingParameters'",
    ),
    f"{COURBON}/PES-20121229115825-53107.xml": (
        "/SyncProductionPerformance",
        "missing required attribute 'releaseID'",
    ),
}

UNSUPPORTED = {
    f"{COURBON}/INV-20121210175555-0001L0001_01.xml": "MaterialInformation",
    f"{COURBON}/LOT-20121210170718-0001L0001.xml": "MaterialInformation",
    f"{COURBON}/MAT-20121210170256-CRBN0001.xml": "MaterialDefinition",
    f"{THIRD_PARTY}/amplab2mml_ShowEquipmentInformation_V0600.xml": (
        "EquipmentInformation"
    ),
    f"{BATCHML}/ProductionBatchRecord_Example_v06.xml": "BatchProductionRecord",
    f"{BATCHML}/cough_syrup_pmw.xml": "BatchML V02",
}


def _parse(samples_dir: Path, relative: str, plant: str | None = None) -> list[Event]:
    path = samples_dir / relative
    return parse_b2mml(
        path.read_bytes(), path.name, samples_dir / "b2mml" / "xsd", plant
    )


@pytest.mark.parametrize("relative", sorted(SCHEDULES), ids=lambda r: Path(r).name)
def test_parse_b2mml_schedule_sample_maps_releases(
    samples_dir: Path, relative: str
) -> None:
    events = _parse(samples_dir, relative, plant="PLANT-1")

    expected = SCHEDULES[relative]
    assert [e.type for e in events] == ["production.order.released.v1"] * len(expected)
    for event, release in zip(events, expected, strict=True):
        assert event.data["order_id"] == release.order_id
        assert event.data["item"] == release.item
        assert event.data["quantity"] == {"value": release.value, "unit": release.unit}
        assert event.data["plant"] == "PLANT-1"
        assert event.data.get("planned_start") == release.planned_start
        assert event.data.get("planned_end") == release.planned_end
        assert event.subject == release.order_id
        assert event.partitionkey == release.order_id
        assert event.source == f"b2mml:{Path(relative).name}"


def test_parse_b2mml_performance_sample_maps_consumption(samples_dir: Path) -> None:
    # The sample lacks the releaseID attribute that the XSD requires (see
    # INVALID_SAMPLES); with it added in memory, the rest is schema-valid.
    path = samples_dir / COURBON / "PES-20121229115825-53107.xml"
    data = path.read_bytes().replace(
        b"<SyncProductionPerformance ", b'<SyncProductionPerformance releaseID="" ', 1
    )

    events = parse_b2mml(data, path.name, samples_dir / "b2mml" / "xsd")

    # Only consumption is reported, so there is no completion or produced goods.
    assert [e.type for e in events] == ["production.material.consumed.v1"]
    assert events[0].data == {
        "work_order_id": "53107",
        "item": "CRBN0001",
        "quantity": {"value": "0.41", "unit": "KG"},
        "lot": "CRBN0001_LOT01",
        "operation": "Weighing",
    }
    # The only time in the document is ApplicationArea/CreationDateTime (+01:00).
    assert events[0].time == "2012-11-29T10:58:25.314955Z"


@pytest.mark.parametrize("name", sorted(NEGATIVES))
def test_parse_b2mml_negative_sample_names_element_and_rule(
    samples_dir: Path, name: str
) -> None:
    path_part, rule_part = NEGATIVES[name]

    with pytest.raises(FormatError) as caught:
        _parse(samples_dir, f"{COCOP}/{name}", plant="PLANT-1")

    problems = caught.value.problems
    assert any(path_part in p.location for p in problems), problems
    assert any(rule_part in p.message for p in problems), problems
    assert all(p.line is not None for p in problems)


def test_negative_samples_all_have_expectations(samples_dir: Path) -> None:
    found = {p.name for p in (samples_dir / "b2mml").rglob("Neg_*.xml")}

    assert found == set(NEGATIVES)


@pytest.mark.parametrize(
    "relative", sorted(INVALID_SAMPLES), ids=lambda r: Path(r).name
)
def test_parse_b2mml_invalid_sample_rejected_by_xsd(
    samples_dir: Path, relative: str
) -> None:
    location, rule_part = INVALID_SAMPLES[relative]

    with pytest.raises(FormatError) as caught:
        _parse(samples_dir, relative, plant="PLANT-1")

    problem = caught.value.problems[0]
    assert problem.location == location
    assert rule_part in problem.message
    assert problem.details["schema"] == "xsd"


@pytest.mark.parametrize("relative", sorted(UNSUPPORTED), ids=lambda r: Path(r).name)
def test_parse_b2mml_other_kinds_not_supported_yet(
    samples_dir: Path, relative: str
) -> None:
    with pytest.raises(FormatError) as caught:
        _parse(samples_dir, relative)

    message = str(caught.value)
    assert "not supported yet" in message
    assert UNSUPPORTED[relative] in message
    assert caught.value.problems[0].details["rule"] == "supported document kind"


def test_parse_b2mml_same_bytes_give_same_event_ids(samples_dir: Path) -> None:
    relative = f"{COCOP}/ProcessProductionSchedule.xml"

    first = _parse(samples_dir, relative, plant="PLANT-1")
    second = _parse(samples_dir, relative, plant="PLANT-1")

    assert [e.id for e in first] == [e.id for e in second]
    assert [e.to_dict() for e in first] == [e.to_dict() for e in second]


def test_parse_b2mml_events_match_catalogue(samples_dir: Path) -> None:
    catalogue = Catalogue.load()

    for relative in SCHEDULES:
        for event in _parse(samples_dir, relative, plant="PLANT-1"):
            event_type = catalogue.get(event.type)
            assert event_type is not None
            assert event_type.violations(event.data) == []
            assert event.dataschema == event_type.schema_id


def test_parse_b2mml_missing_schema_file_raises_config_error(
    samples_dir: Path, tmp_path: Path
) -> None:
    path = samples_dir / COCOP / "ProcessProductionSchedule.xml"

    with pytest.raises(ConfigError, match=r"B2MML-V0600-ProductionSchedule\.xsd"):
        parse_b2mml(path.read_bytes(), path.name, tmp_path, plant="PLANT-1")


def test_compiled_schema_compiles_once_per_file(b2mml_xsd: Path) -> None:
    path = (b2mml_xsd / "V0600" / "B2MML-V0600-ProductionSchedule.xsd").resolve()

    assert compiled_schema(path) is compiled_schema(path)


def test_parse_b2mml_skipped_request_logged(
    samples_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="plantbus.formats.b2mml"):
        _parse(samples_dir, f"{COCOP}/ProcessProductionSchedule.xml", "PLANT-1")

    [record] = caplog.records
    assert "Skipped 1 ProductionRequest(s)" in record.getMessage()
    assert "/ProductionSchedule/ProductionRequest[2]" in record.getMessage()
