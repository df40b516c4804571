"""Tests of JSONata mappings: fast path, fallback, errors and the Mapping class."""

from __future__ import annotations

from typing import Any

import pytest

from plantbus.errors import ConfigError, MappingError
from plantbus.events.envelope import Event
from plantbus.pipeline.mapping import UNDEFINED, Mapping, compile_expression

SEVEN_FIELDS = (
    '{"order": data.work_order_id, "item": data.item, "qty": data.quantity.value, '
    '"uom": data.quantity.unit, "lot": data.lot, "ref": "plantbus:" & id, '
    '"plant": plant}'
)


def completed_event(**data: Any) -> dict[str, Any]:
    payload = {
        "work_order_id": "WO-1001",
        "item": "BRK-200",
        "quantity": {"value": "12.5", "unit": "u"},
        "completed_at": "2026-03-01T06:00:00Z",
        "lot": "LOT-7",
    }
    payload.update(data)
    event = Event.create(
        "production.workorder.completed.v1",
        "urn:plantbus:mes:line-1",
        payload,
        plant="P100",
        partitionkey="WO-1001",
    )
    return event.to_dict()


def same(left: Any, right: Any) -> bool:
    """Compare values and their types, so 1, 1.0 and True count as different."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(
            same(left[key], right[key]) for key in left
        )
    if isinstance(left, list):
        return len(left) == len(right) and all(
            same(a, b) for a, b in zip(left, right, strict=True)
        )
    return bool(left == right)


DATA = {
    "id": "E-1",
    "type": "production.workorder.completed.v1",
    "plant": "P100",
    "data": {
        "work_order_id": "WO-1",
        "quantity": {"value": "12.5", "unit": "kg"},
        "count": 3,
        "whole": 1.0,
        "tenth": 0.1,
        "big": 10**15,
        "huge": 1e20,
        "flag": True,
        "nothing": None,
        "tags": ["a", "b"],
        "one": ["x"],
        "empty": [],
        "lines": [{"item": "A", "qty": 1}, {"item": "B", "qty": 2}],
        "name with space": "spaced",
        "padded": "  two   words ",
    },
}

# (expression, expected result) on DATA, all of them compiled.
FAST_CASES = [
    ("data.work_order_id", "WO-1"),
    ("data.quantity.value", "12.5"),
    ("data.missing", UNDEFINED),
    ("data.missing.deeper.still", UNDEFINED),
    ("data.nothing", None),
    ("data.nothing.below", UNDEFINED),
    ("data.work_order_id.below", UNDEFINED),
    ("data.`name with space`", "spaced"),
    ("$.plant", "P100"),
    ("$$.data.count", 3),
    ("data.whole", 1.0),
    ("data.tags", ["a", "b"]),
    ("data.one", ["x"]),
    ("data.empty", []),
    ('"text"', "text"),
    ("42", 42),
    ("2.5", 2.5),
    ("true", True),
    ("null", None),
    ('"plantbus:" & id', "plantbus:E-1"),
    ('"n=" & data.count', "n=3"),
    ('"w=" & data.whole', "w=1"),
    ('"t=" & data.tenth', "t=0.1"),
    ('"b=" & data.big', "b=1e+15"),
    ('"h=" & data.huge', "h=1e+20"),
    ('"f=" & data.flag', "f=true"),
    ('"z=" & data.nothing', "z=null"),
    ('"m=" & data.missing & "."', "m=."),
    ('"l=" & data.tags', 'l=["a","b"]'),
    ('"q=" & data.quantity', 'q={"value":"12.5","unit":"kg"}'),
    ("data.missing & data.missing", ""),
    ('{"a": data.missing, "b": data.nothing}', {"b": None}),
    ('{"q": {"v": data.quantity.value, "gone": data.missing}}', {"q": {"v": "12.5"}}),
    ("[data.work_order_id, data.missing, 1]", ["WO-1", 1]),
    ("[data.tags, [data.tags]]", ["a", "b", ["a", "b"]]),
    ("[data.empty]", []),
    ("[]", []),
    ("{}", {}),
    ("(data.count)", 3),
    ("$string(data.count)", "3"),
    ("$string(data.whole)", "1"),
    ("$string(data.missing)", UNDEFINED),
    ("$string(data.nothing)", "null"),
    ('$number("12")', 12),
    ("$number(data.quantity.value)", 12.5),
    ("$number(data.whole)", 1),
    ("$uppercase(data.quantity.unit)", "KG"),
    ('$lowercase("ÄB")', "äb"),
    ("$trim(data.padded)", "two words"),
    ("$substring(data.work_order_id, 3)", "1"),
    ("$substring(data.work_order_id, 0, 2)", "WO"),
    ("$substring(data.work_order_id, -1)", "1"),
    ("$exists(data.nothing)", True),
    ("$exists(data.missing)", False),
]


@pytest.mark.parametrize(("source", "expected"), FAST_CASES)
def test_expression_fast_path_matches_expected(source: str, expected: Any) -> None:
    expression = compile_expression(source)

    result = expression.evaluate(DATA)

    assert expression.fast_path, expression.fallback_reason
    assert same(result, expected), result
    assert expression.fallback_count == 0


@pytest.mark.parametrize(("source", "expected"), FAST_CASES)
def test_expression_interpreter_agrees_on_table(source: str, expected: Any) -> None:
    expression = compile_expression(source)

    assert same(expression.evaluate_interpreted(DATA), expected)


@pytest.mark.parametrize(
    ("source", "reason_part"),
    [
        ("data.lines[0].item", "predicate"),
        ("data.lines[qty > 1]", "predicate"),
        ("data.count + 1", "'+'"),
        ("data.count > 1 ? 'big' : 'small'", "conditional"),
        ("$sum(data.lines.qty)", "$sum"),
        ("$string(data.count, true)", "2 argument(s)"),
        ('{"a": 1, "a": 2}', "repeats the key"),
        ("{data.work_order_id: 1}", "not a string literal"),
        ("data.$", "only field names"),
        ("$string", "built-in function"),
        ("data.tags[]", "[] suffix"),
        ("-data.count", "'-'"),
        ("(data.count; data.whole)", "more than one expression"),
    ],
)
def test_compile_expression_falls_back_for_unsupported(
    source: str, reason_part: str
) -> None:
    expression = compile_expression(source)

    assert not expression.fast_path
    assert expression.fallback_reason is not None
    assert reason_part in expression.fallback_reason


def test_expression_interpreter_runs_unsupported_expression() -> None:
    expression = compile_expression("data.count * 2 + $count(data.tags)")

    assert expression.evaluate(DATA) == 8


def test_expression_falls_back_when_path_meets_list() -> None:
    expression = compile_expression("data.lines.item")

    result = expression.evaluate(DATA)

    assert expression.fast_path
    assert result == ["A", "B"]
    assert expression.fallback_count == 1


def test_expression_object_falls_back_on_list() -> None:
    expression = compile_expression(
        '{"items": data.lines.item, "wo": data.work_order_id}'
    )

    result = expression.evaluate(DATA)

    assert result == {"items": ["A", "B"], "wo": "WO-1"}
    assert expression.fallback_count == 1


def test_expression_falls_back_for_list_input() -> None:
    expression = compile_expression("id")

    result = expression.evaluate([{"id": "E-1"}, {"id": "E-2"}])

    assert result == ["E-1", "E-2"]
    assert expression.fallback_count == 1


def test_expression_bindings_supply_variables() -> None:
    expression = compile_expression('$env.site & "/" & $event.id')

    result = expression.evaluate(DATA, {"env": {"site": "S1"}, "event": DATA})

    assert expression.fast_path
    assert result == "S1/E-1"


def test_expression_unbound_variable_is_undefined() -> None:
    expression = compile_expression("$env.site")

    assert expression.evaluate(DATA) is UNDEFINED
    assert expression.evaluate(DATA, {"env": None}) is UNDEFINED
    assert expression.evaluate(DATA, {"env": {"site": None}}) is None


def test_expression_binding_that_shadows_function_falls_back() -> None:
    expression = compile_expression("$uppercase(data.quantity.unit)")

    with pytest.raises(MappingError) as caught:
        expression.evaluate(DATA, {"uppercase": 5})

    assert expression.fallback_count == 1
    assert "T1006" in str(caught.value)


def test_expression_runtime_error_names_expression_and_event() -> None:
    expression = compile_expression("$uppercase(data.count)")

    with pytest.raises(MappingError) as caught:
        expression.evaluate(DATA)

    message = str(caught.value)
    assert "'$uppercase(data.count)'" in message
    assert "'E-1'" in message
    assert "'production.workorder.completed.v1'" in message
    assert "T0410" in message
    assert caught.value.expression == "$uppercase(data.count)"
    assert caught.value.event_id == "E-1"


def test_expression_runtime_error_wraps_python_errors() -> None:
    expression = compile_expression("$number(data.work_order_id)")

    with pytest.raises(MappingError) as caught:
        expression.evaluate(DATA)

    assert "ValueError" in str(caught.value)
    assert caught.value.event_id == "E-1"


def test_expression_duplicate_key_is_runtime_error() -> None:
    expression = compile_expression('{"a": 1, "a": 2}')

    with pytest.raises(MappingError, match="D1009"):
        expression.evaluate(DATA)


@pytest.mark.parametrize(
    ("source", "position", "problem"),
    [
        ("data.", "near character 5", "Unexpected end of expression"),
        ('{"a": }', "near character 7", "cannot be used as a unary operator"),
        ('"open', "near character 5", "must be terminated"),
        ("data work", "near character 9", "Syntax error"),
    ],
)
def test_compile_expression_syntax_error_is_config_error(
    source: str, position: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_expression(source)

    message = str(caught.value)
    assert repr(source) in message
    assert position in message
    assert problem in message


def test_compile_expression_rejects_non_string() -> None:
    with pytest.raises(ConfigError, match="expected a string"):
        compile_expression(5)  # type: ignore[arg-type]


def test_mapping_whole_expression_maps_event() -> None:
    event = completed_event()
    mapping = Mapping(SEVEN_FIELDS)

    result = mapping.apply(event)

    assert mapping.fast_path
    assert result == {
        "order": "WO-1001",
        "item": "BRK-200",
        "qty": "12.5",
        "uom": "u",
        "lot": "LOT-7",
        "ref": f"plantbus:{event['id']}",
        "plant": "P100",
    }


def test_mapping_whole_expression_drops_missing_fields() -> None:
    event = completed_event()
    del event["data"]["lot"]

    result = Mapping(SEVEN_FIELDS).apply(event)

    assert "lot" not in result
    assert result["order"] == "WO-1001"


def test_mapping_whole_expression_must_produce_object() -> None:
    mapping = Mapping("data.item")

    with pytest.raises(MappingError) as caught:
        mapping.apply(completed_event())

    assert "'BRK-200'" in str(caught.value)
    assert "must produce a JSON object" in str(caught.value)


def test_mapping_whole_expression_without_value_is_error() -> None:
    with pytest.raises(MappingError, match="produced no value"):
        Mapping("data.missing").apply(completed_event())


def test_mapping_fields_map_event() -> None:
    mapping = Mapping(
        {
            "order": "data.work_order_id",
            "quantity": {"value": "$number(data.quantity.value)", "uom": '"EA"'},
            "lot": "data.lot",
            "gone": "data.missing",
            "site": "$env.site",
        }
    )

    result = mapping.apply(completed_event(), {"env": {"site": "S1"}})

    assert mapping.fast_path
    assert result == {
        "order": "WO-1001",
        "quantity": {"value": 12.5, "uom": "EA"},
        "lot": "LOT-7",
        "site": "S1",
    }
    assert set(mapping.expressions) == {
        "order",
        "quantity.value",
        "quantity.uom",
        "lot",
        "gone",
        "site",
    }


def test_mapping_fields_mix_fast_and_interpreted() -> None:
    mapping = Mapping({"order": "data.work_order_id", "double": "data.scrap * 2"})

    expressions = mapping.expressions

    assert expressions["order"].fast_path
    assert not expressions["double"].fast_path
    assert not mapping.fast_path


def test_mapping_field_error_names_field() -> None:
    mapping = Mapping({"order": "data.work_order_id", "unit": "$uppercase(1)"})
    event = completed_event()

    with pytest.raises(MappingError) as caught:
        mapping.apply(event)

    message = str(caught.value)
    assert "Mapping field 'unit' failed" in message
    assert "'$uppercase(1)'" in message
    assert repr(event["id"]) in message


def test_mapping_field_syntax_error_names_field() -> None:
    with pytest.raises(ConfigError) as caught:
        Mapping({"quantity": {"value": "data.quantity."}})

    message = str(caught.value)
    assert "'quantity.value'" in message
    assert "'data.quantity.'" in message


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"qty": 5}, "expected a JSONata expression string"),
        ({}, "has no output fields"),
        ({"quantity": {}}, "'quantity' has no output fields"),
        ({"": "id"}, "is invalid: expected a non-empty string"),
        (["id"], "expected one JSONata expression"),
    ],
)
def test_mapping_rejects_invalid_spec(spec: Any, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        Mapping(spec)
