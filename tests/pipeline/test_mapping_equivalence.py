"""Property tests: the fast path returns exactly what jsonata-python returns.

Hypothesis builds event-like inputs and expressions from the compiled subset.
Each expression is evaluated by the fast path, by `evaluate_interpreted` and by
a bare `jsonata.Jsonata(...).evaluate` call. The three must agree, including
the types of numbers and null against undefined.
"""

from __future__ import annotations

import json
from typing import Any

import jsonata  # type: ignore[import-untyped]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plantbus.errors import MappingError
from plantbus.pipeline.mapping import UNDEFINED, Expression, compile_expression

from .test_mapping import SEVEN_FIELDS, same

KEYS = ["a", "b", "id", "data", "qty", "x y"]
FUNCTIONS_OF_ONE = ["string", "number", "uppercase", "lowercase", "trim", "exists"]

PROPERTY_SETTINGS = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**18), max_value=10**18),
    st.sampled_from([0, 1, 10**15 - 1, 10**15, -(10**15)]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1.0, 0.1, -0.0, 2.5, 1e20, 1e-7, 123456.789]),
    st.text(max_size=12),
    st.sampled_from(["12.5", "0x1F", " 7 ", "abc", "", "  a  b  ", "ß", "WO-1"]),
)


def json_values(with_lists: bool) -> st.SearchStrategy[Any]:
    def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        objects = st.dictionaries(st.sampled_from(KEYS), children, max_size=4)
        if not with_lists:
            return objects
        return st.one_of(objects, st.lists(children, max_size=3))

    return st.recursive(scalars, extend, max_leaves=12)


def events(with_lists: bool) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(KEYS), json_values(with_lists), max_size=6)


names = st.one_of(
    st.sampled_from([key for key in KEYS if " " not in key]),
    st.sampled_from(["`x y`", "`a`", "missing"]),
)
paths = st.tuples(
    st.sampled_from(["", "$.", "$$.", "$event.", "$event"]),
    st.lists(names, min_size=1, max_size=4).map(".".join),
).map(lambda parts: parts[0] if parts[0] == "$event" else parts[0] + parts[1])
literals = st.one_of(
    st.text(max_size=8).map(lambda text: json.dumps(text)),
    st.integers(min_value=0, max_value=10**17).map(str),
    st.floats(min_value=0, allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["true", "false", "null", "$", "$$"]),
)


def expressions(with_functions: bool) -> st.SearchStrategy[str]:
    def extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        shapes = [
            st.lists(children, min_size=2, max_size=4).map(" & ".join),
            st.dictionaries(st.sampled_from(KEYS), children, max_size=4).map(
                lambda fields: (
                    "{"
                    + ", ".join(
                        f"{json.dumps(key)}: {value}" for key, value in fields.items()
                    )
                    + "}"
                )
            ),
            st.lists(children, max_size=4).map(
                lambda items: "[" + ", ".join(items) + "]"
            ),
            children.map(lambda inner: f"({inner})"),
        ]
        if with_functions:
            shapes.append(
                st.tuples(st.sampled_from(FUNCTIONS_OF_ONE), children).map(
                    lambda call: f"${call[0]}({call[1]})"
                )
            )
            shapes.append(
                st.lists(children, min_size=2, max_size=3).map(
                    lambda args: f"$substring({', '.join(args)})"
                )
            )
        return st.one_of(*shapes)

    return st.recursive(st.one_of(paths, literals), extend, max_leaves=8)


bindings = st.one_of(
    st.none(),
    st.fixed_dictionaries({"event": json_values(with_lists=True)}),
    st.just({"event": None}),
    st.just({"uppercase": "shadowed", "string": 1}),
)


def evaluate_or_error(expression: Expression, method: str, data: Any, env: Any) -> Any:
    try:
        return getattr(expression, method)(data, env)
    except MappingError as exc:
        return ("error", str(exc))


def bare_jsonata(source: str, data: Any, env: Any) -> Any:
    """Evaluate with jsonata-python's defaults: both null and undefined become None."""
    try:
        return as_plain_lists(jsonata.Jsonata(source).evaluate(data, env))
    except Exception:
        return "error"


def as_plain_lists(value: Any) -> Any:
    # jsonata-python returns its own list subclass for constructed arrays.
    if isinstance(value, list):
        return [as_plain_lists(item) for item in value]
    if isinstance(value, dict):
        return {key: as_plain_lists(item) for key, item in value.items()}
    return value


def as_bare_result(value: Any) -> Any:
    if value is UNDEFINED:
        return None
    if isinstance(value, tuple) and value and value[0] == "error":
        return "error"
    return value


def check_equivalent(source: str, data: dict[str, Any], env: Any) -> Expression:
    expression = compile_expression(source)
    assert expression.fast_path, (source, expression.fallback_reason)

    fast = evaluate_or_error(expression, "evaluate", data, env)
    interpreted = evaluate_or_error(expression, "evaluate_interpreted", data, env)
    assert same(fast, interpreted), (source, data, env, fast, interpreted)

    bare = bare_jsonata(source, data, env)
    assert same(as_bare_result(fast), bare), (source, data, env, fast, bare)
    return expression


@PROPERTY_SETTINGS
@given(
    source=expressions(with_functions=True), data=events(with_lists=True), env=bindings
)
def test_fast_path_equals_interpreter(
    source: str, data: dict[str, Any], env: Any
) -> None:
    check_equivalent(source, data, env)


@PROPERTY_SETTINGS
@given(source=expressions(with_functions=False), data=events(with_lists=False))
def test_fast_path_needs_no_fallback_without_lists(
    source: str, data: dict[str, Any]
) -> None:
    # Without lists in the data and without function calls nothing leaves the
    # compiled subset, so a pass here cannot come from the interpreter.
    expression = check_equivalent(source, data, {"event": {"a": 1, "x y": None}})

    assert expression.fallback_count == 0


seven_field_events = st.fixed_dictionaries(
    {"id": scalars, "plant": scalars},
    optional={
        "data": st.fixed_dictionaries(
            {},
            optional={
                "work_order_id": scalars,
                "item": scalars,
                "lot": json_values(with_lists=True),
                "quantity": st.one_of(
                    scalars,
                    st.fixed_dictionaries(
                        {}, optional={"value": scalars, "unit": scalars}
                    ),
                ),
            },
        )
    },
)


@PROPERTY_SETTINGS
@given(data=seven_field_events)
def test_seven_field_mapping_equals_interpreter(data: dict[str, Any]) -> None:
    expression = check_equivalent(SEVEN_FIELDS, data, None)

    assert expression.fallback_count == 0
