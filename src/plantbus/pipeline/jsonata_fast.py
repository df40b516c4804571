"""Compile simple JSONata expressions into Python closures.

jsonata-python walks the expression tree on every evaluation and checks the
types of the whole input first. docs/benchmarks.md shows what that costs for a
seven-field mapping. This module takes the tree that jsonata's own parser
built and turns a subset of it into closures that do the same work directly:

- paths of field names (``a.b.c``, backtick-quoted names), optionally starting
  with ``$``, ``$$`` or a variable such as ``$event``
- ``$``, ``$$`` and variables bound by the caller
- string, number, boolean and null literals
- string concatenation with ``&``
- object constructors with string-literal keys, and array constructors
- a parenthesised block that holds one expression
- ``$string(x)``, ``$number(x)``, ``$uppercase(x)``, ``$lowercase(x)``,
  ``$trim(x)``, ``$substring(s, start[, length])`` and ``$exists(x)``

`compile_fast` raises `Unsupported` for every other construct. A compiled
closure raises `FallbackNeeded` when the data at run time leaves the subset,
for example a list in the middle of a path (JSONata then maps over the list)
or a function argument of a type that the function's signature rejects. The
caller then runs the interpreter, so results and errors match jsonata-python.

Inside the closures JSON null is Python None and JSONata's "undefined" (no
value) is the `UNDEFINED` sentinel. The values and built-in functions that the
closures call at run time are in `plantbus.pipeline.jsonata_runtime`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from jsonata import Jsonata  # type: ignore[import-untyped]
from jsonata.parser import Parser  # type: ignore[import-untyped]

from plantbus.pipeline.jsonata_runtime import (
    FUNCTIONS,
    UNDEFINED,
    Compiled,
    FallbackNeeded,
    stringify,
    to_text,
)

# Parser flags that mark constructs outside the compiled subset, with the words
# used in `Unsupported` reasons.
_UNSUPPORTED_FLAGS: Final = (
    ("predicate", "a predicate or index in [...]"),
    ("stages", "a predicate or index in [...]"),
    ("group", "a grouping object constructor after a path"),
    ("keep_array", "the [] suffix that keeps singleton arrays"),
    ("keep_singleton_array", "the [] suffix that keeps singleton arrays"),
    ("focus", "a focus variable binding (@)"),
    ("index", "a positional variable binding (#)"),
    ("tuple", "a focus or positional variable binding"),
    ("ancestor", "a parent operator (%)"),
    ("seeking_parent", "a parent operator (%)"),
    ("consarray", "an array constructor used as a path step"),
    ("thunk", "a tail call"),
    ("next_function", "a function chain"),
    ("slot", "a parent operator (%)"),
)


class Unsupported(Exception):
    """An expression uses a construct that `compile_fast` does not compile."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Names of jsonata-python's built-in functions. A variable with one of these
# names refers to the function unless the caller binds the name.
BUILTIN_FUNCTIONS: Final[frozenset[str]] = frozenset(Jsonata.static_frame.bindings)


def compile_fast(ast: Any) -> Compiled:
    """Compile a jsonata-python expression tree into a closure, or raise Unsupported."""
    return _compile(ast)


def _compile(node: Any) -> Compiled:
    _reject_flags(node)
    kind = node.type

    if kind in ("string", "number", "value"):
        return _compile_literal(node)
    if kind == "variable":
        return _compile_variable(node.value)
    if kind == "name":
        return _compile_path([node])
    if kind == "path":
        return _compile_path(node.steps)
    if kind == "binary" and node.value == "&":
        return _compile_concat(node)
    if kind == "unary" and node.value == "{":
        return _compile_object(node)
    if kind == "unary" and node.value == "[":
        return _compile_array(node)
    if kind == "block" and len(node.expressions) == 1:
        return _compile(node.expressions[0])
    if kind == "function":
        return _compile_call(node)
    raise Unsupported(_describe(node))


def _reject_flags(node: Any) -> None:
    if not isinstance(node, Parser.Symbol):
        raise Unsupported(f"the parser produced {node!r} where a node was expected")
    for flag, description in _UNSUPPORTED_FLAGS:
        if getattr(node, flag, None):
            raise Unsupported(f"the expression uses {description}")


def _describe(node: Any) -> str:
    kind = node.type
    if kind in ("binary", "unary"):
        return f"the operator {node.value!r} is not compiled"
    if kind == "block":
        return "a block with more than one expression is not compiled"
    if kind == "condition":
        return "the conditional operator ? : is not compiled"
    return f"the construct {kind!r} is not compiled"


def _literal_value(node: Any) -> Any:
    # jsonata's parser stores null as a "value" node whose value is None.
    return node.value


def _compile_literal(node: Any) -> Compiled:
    value = _literal_value(node)

    def literal(root: dict[str, Any], env: Mapping[str, Any] | None) -> Any:
        return value

    return literal


def _compile_variable(name: str) -> Compiled:
    # `$` is the context and `$$` the root. Without predicates or mapping
    # steps the context never moves, so both are the root input here.
    if name in ("", "$"):
        return _root
    if name in BUILTIN_FUNCTIONS:
        raise Unsupported(f"${name} refers to a built-in function as a value")

    def variable(root: dict[str, Any], env: Mapping[str, Any] | None) -> Any:
        if env is None:
            return UNDEFINED
        value = env.get(name, UNDEFINED)
        # jsonata-python treats a binding to None as unbound.
        return UNDEFINED if value is None else value

    return variable


def _root(root: dict[str, Any], env: Mapping[str, Any] | None) -> Any:
    return root


def _lookup(value: Any, key: str) -> Any:
    """Return one path step on a value that is not known to be a plain dict."""
    if isinstance(value, dict):
        return value.get(key, UNDEFINED)
    if isinstance(value, list):
        # JSONata maps the rest of the path over the items and flattens.
        raise FallbackNeeded
    return UNDEFINED


def _compile_path(steps: list[Any]) -> Compiled:
    for step in steps:
        _reject_flags(step)
    first = steps[0]
    if first.type == "variable":
        start = _compile_variable(first.value)
        names = steps[1:]
    else:
        start = _root
        names = steps
    for step in names:
        if step.type != "name":
            raise Unsupported(
                f"a path step of kind {step.type!r}, but only field names are "
                "compiled after the first step"
            )
    keys = tuple(str(step.value) for step in names)

    if start is _root:
        return _root_path(keys)
    return _relative_path(start, keys)


def _root_path(keys: tuple[str, ...]) -> Compiled:
    # Unrolled for the common depths because each Python call costs about as
    # much as the lookup itself. The root is a dict, checked by the caller.
    if not keys:
        return _root
    if len(keys) == 1:
        (key,) = keys

        def path1(root: dict[str, Any], env: Mapping[str, Any] | None) -> Any:
            return root.get(key, UNDEFINED)

        return path1
    if len(keys) == 2:
        key1, key2 = keys

        def path2(root: dict[str, Any], env: Mapping[str, Any] | None) -> Any:
            value = root.get(key1, UNDEFINED)
            if value.__class__ is dict:
                return value.get(key2, UNDEFINED)
            return _lookup(value, key2)

        return path2
    if len(keys) == 3:
        key1, key2, key3 = keys

        def path3(root: dict[str, Any], env: Mapping[str, Any] | None) -> Any:
            value = root.get(key1, UNDEFINED)
            if value.__class__ is dict:
                value = value.get(key2, UNDEFINED)
            else:
                value = _lookup(value, key2)
            if value.__class__ is dict:
                return value.get(key3, UNDEFINED)
            return _lookup(value, key3)

        return path3

    first_key, *rest = keys

    def path_n(root: dict[str, Any], env: Mapping[str, Any] | None) -> Any:
        value = root.get(first_key, UNDEFINED)
        for key in rest:
            value = _lookup(value, key)
        return value

    return path_n


def _relative_path(start: Compiled, keys: tuple[str, ...]) -> Compiled:
    def path(root: dict[str, Any], env: Mapping[str, Any] | None) -> Any:
        value = start(root, env)
        for key in keys:
            value = _lookup(value, key)
        return value

    return path


def _compile_concat(node: Any) -> Compiled:
    # `a & b & c` parses as ((a & b) & c). Every & yields a string and counts
    # undefined as "", so the chain is the plain join of its operands.
    parts: list[str | Compiled] = []
    for operand in _concat_operands(node):
        if operand.type in ("string", "number", "value"):
            _reject_flags(operand)
            try:
                parts.append(stringify(_literal_value(operand)))
            except FallbackNeeded as exc:
                raise Unsupported(
                    f"the literal {operand.value!r} cannot be formatted as text"
                ) from exc
        else:
            parts.append(_compile(operand))
    merged = _merge_adjacent_text(parts)

    if len(merged) == 1:
        only = merged[0]
        if isinstance(only, str):
            return _compile_literal_text(only)
        return _concat_one(only)
    if len(merged) == 2:
        left, right = merged
        if isinstance(left, str) and not isinstance(right, str):
            return _concat_prefix(left, right)
        if not isinstance(left, str) and isinstance(right, str):
            return _concat_suffix(left, right)
        if not isinstance(left, str) and not isinstance(right, str):
            return _concat_pair(left, right)
    return _concat_many(merged)


def _concat_operands(node: Any) -> list[Any]:
    if node.type == "binary" and node.value == "&":
        _reject_flags(node)
        return [*_concat_operands(node.lhs), *_concat_operands(node.rhs)]
    return [node]


def _merge_adjacent_text(parts: list[str | Compiled]) -> list[str | Compiled]:
    merged: list[str | Compiled] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] = merged[-1] + part
        else:
            merged.append(part)
    return merged


def _compile_literal_text(text: str) -> Compiled:
    def literal_text(root: dict[str, Any], env: Mapping[str, Any] | None) -> str:
        return text

    return literal_text


def _concat_one(operand: Compiled) -> Compiled:
    def concat(root: dict[str, Any], env: Mapping[str, Any] | None) -> str:
        return to_text(operand(root, env))

    return concat


def _concat_prefix(prefix: str, operand: Compiled) -> Compiled:
    def concat(root: dict[str, Any], env: Mapping[str, Any] | None) -> str:
        value = operand(root, env)
        if value.__class__ is str:
            return prefix + value
        return prefix + to_text(value)

    return concat


def _concat_suffix(operand: Compiled, suffix: str) -> Compiled:
    def concat(root: dict[str, Any], env: Mapping[str, Any] | None) -> str:
        return to_text(operand(root, env)) + suffix

    return concat


def _concat_pair(left: Compiled, right: Compiled) -> Compiled:
    def concat(root: dict[str, Any], env: Mapping[str, Any] | None) -> str:
        return to_text(left(root, env)) + to_text(right(root, env))

    return concat


def _concat_many(parts: list[str | Compiled]) -> Compiled:
    steps = tuple(parts)

    def concat(root: dict[str, Any], env: Mapping[str, Any] | None) -> str:
        pieces = [
            part if isinstance(part, str) else to_text(part(root, env))
            for part in steps
        ]
        return "".join(pieces)

    return concat


def _compile_object(node: Any) -> Compiled:
    fields: list[tuple[str, Compiled]] = []
    for key_node, value_node in node.lhs_object:
        _reject_flags(key_node)
        if key_node.type != "string":
            raise Unsupported("an object key that is not a string literal")
        key = str(key_node.value)
        if any(key == existing for existing, _ in fields):
            # The interpreter raises D1009 for this; let it.
            raise Unsupported(f"the object constructor repeats the key {key!r}")
        fields.append((key, _compile(value_node)))
    pairs = tuple(fields)

    def build_object(
        root: dict[str, Any], env: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value_of in pairs:
            value = value_of(root, env)
            # An undefined value leaves the key out, as in JSONata.
            if value is not UNDEFINED:
                result[key] = value
        return result

    return build_object


def _compile_array(node: Any) -> Compiled:
    # JSONata flattens a list-valued item into the array, except when the item
    # is itself written as an array constructor.
    items = tuple(
        (_compile(item), item.type == "unary" and item.value == "[")
        for item in node.expressions
    )

    def build_array(root: dict[str, Any], env: Mapping[str, Any] | None) -> list[Any]:
        result: list[Any] = []
        for value_of, nested_constructor in items:
            value = value_of(root, env)
            if value is UNDEFINED:
                continue
            if nested_constructor or not isinstance(value, list):
                result.append(value)
            else:
                result.extend(value)
        return result

    return build_array


def _compile_call(node: Any) -> Compiled:
    procedure = node.procedure
    _reject_flags(procedure)
    if procedure.type != "variable":
        raise Unsupported("a call of something other than a named function")
    name = str(procedure.value)
    arguments = [_compile(argument) for argument in node.arguments or []]
    build = FUNCTIONS.get((name, len(arguments)))
    if build is None:
        raise Unsupported(
            f"the function ${name} with {len(arguments)} argument(s) is not compiled"
        )
    call = build(*arguments)

    def guarded(root: dict[str, Any], env: Mapping[str, Any] | None) -> Any:
        # A caller's binding with the function's name replaces the function.
        if env and name in env:
            raise FallbackNeeded
        return call(root, env)

    return guarded
