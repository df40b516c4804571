"""JSONata mappings that turn a CloudEvents event into the payload of a sink.

A pipeline step maps an event with JSONata expressions. The input of every
expression is the event in the CloudEvents JSON format, as a dict, so an
expression reads ``data.work_order_id`` or ``id``. Variables such as ``$env``
come from the caller's bindings.

`compile_expression` parses an expression with jsonata-python and compiles it
into Python closures when it stays within the subset that
`plantbus.pipeline.jsonata_fast` handles. Other expressions run on the
jsonata-python interpreter, and so does a compiled one whenever its data leaves
that subset at run time. Both paths return the same values, which the
equivalence tests check.

Values follow JSON: null is None, and JSONata's "undefined" (no value, for
example a missing field) is the `UNDEFINED` sentinel.
"""

from __future__ import annotations

import logging
from typing import Any, TypeAlias

import jsonata  # type: ignore[import-untyped]
from jsonata import JException, Utils

from plantbus.errors import ConfigError, MappingError
from plantbus.pipeline.jsonata_fast import Unsupported, compile_fast
from plantbus.pipeline.jsonata_runtime import UNDEFINED, Compiled, FallbackNeeded

__all__ = ["UNDEFINED", "Expression", "Mapping", "compile_expression"]

logger = logging.getLogger("plantbus.pipeline")

# A mapping spec: one expression for the whole output object, or output field
# names mapped to expressions or to nested specs of the same form.
MappingSpec: TypeAlias = str | dict[str, Any]
_CompiledFields: TypeAlias = dict[str, "Expression | _CompiledFields"]


class Expression:
    """A compiled JSONata expression that runs on the fast path when it can."""

    __slots__ = (
        "_compiled",
        "_interpreter",
        "fallback_count",
        "fallback_reason",
        "fast_path",
        "source",
    )

    def __init__(
        self, source: str, interpreter: Any, compiled: Compiled | None, reason: str
    ) -> None:
        self.source = source
        # True when the expression was compiled into closures.
        self.fast_path = compiled is not None
        # Why the expression runs on the interpreter, or None on the fast path.
        self.fallback_reason: str | None = None if compiled is not None else reason
        # Evaluations of a compiled expression that the interpreter had to
        # finish because the data left the compiled subset.
        self.fallback_count = 0
        self._compiled = compiled
        self._interpreter = interpreter

    def __repr__(self) -> str:
        path = "fast path" if self.fast_path else "interpreter"
        return f"<Expression {self.source!r} on the {path}>"

    def evaluate(self, data: Any, bindings: dict[str, Any] | None = None) -> Any:
        """Evaluate the expression on data with optional `$name` variable bindings."""
        # NOTE: unlike jsonata-python, the fast path does not check that the
        # whole input contains only JSON types. It also returns sub-objects of
        # the input itself rather than copies, so treat results as read-only.
        compiled = self._compiled
        if compiled is not None:
            # The closures assume a dict root. JSONata treats a list root as a
            # sequence, which only the interpreter handles.
            if data.__class__ is dict:
                try:
                    return compiled(data, bindings)
                except FallbackNeeded:
                    pass
            self.fallback_count += 1
        return self.evaluate_interpreted(data, bindings)

    def evaluate_interpreted(
        self, data: Any, bindings: dict[str, Any] | None = None
    ) -> Any:
        """Evaluate the expression on the jsonata-python interpreter."""
        try:
            # A fresh bindings frame per call keeps concurrent evaluations of
            # one expression from sharing the interpreter's `$` binding.
            raw = self._interpreter.evaluate(data, bindings or {})
        except Exception as exc:
            # jsonata-python raises JException for most errors, but built-in
            # functions also let ValueError, TypeError and others through.
            raise _runtime_error(self.source, data, exc) from exc
        return _from_interpreter(raw)


def compile_expression(expr: str) -> Expression:
    """Parse a JSONata expression and compile it for the fast path where possible."""
    if not isinstance(expr, str):
        raise ConfigError(
            f"JSONata expression {expr!r} is a {type(expr).__name__}: expected a "
            "string such as 'data.work_order_id'."
        )

    # NOTE: interpreted expressions run without a time limit, so a recursive
    # JSONata function that never returns blocks the caller. jsonata-python
    # 0.7.1's `timeout` option counts from construction, not per evaluation.
    try:
        interpreter = jsonata.Jsonata(expr)
    except JException as exc:
        raise _syntax_error(expr, exc) from exc
    if interpreter.errors:
        raise _syntax_error(expr, interpreter.errors[0])
    # Keep JSONata null and undefined apart for `_from_interpreter` to convert.
    interpreter.set_output_convert_nulls(False)

    try:
        compiled: Compiled | None = compile_fast(interpreter.ast)
        reason = ""
    except Unsupported as unsupported:
        compiled = None
        reason = unsupported.reason
        logger.debug("JSONata expression %r runs on the interpreter: %s", expr, reason)
    return Expression(expr, interpreter, compiled, reason)


class Mapping:
    """Map an event dict to an output object by a hub file's mapping spec."""

    def __init__(self, spec: MappingSpec) -> None:
        self.spec = spec
        self._whole: Expression | None = None
        self._fields: _CompiledFields | None = None
        if isinstance(spec, str):
            self._whole = compile_expression(spec)
        elif isinstance(spec, dict):
            self._fields = _compile_fields(spec, prefix="")
        else:
            raise ConfigError(
                f"Mapping spec {spec!r} is a {type(spec).__name__}: expected one "
                "JSONata expression that builds the output object, or a mapping "
                "of output field names to expressions."
            )

    @property
    def expressions(self) -> dict[str, Expression]:
        """Return every expression by output field path ("" for a whole-object one)."""
        if self._whole is not None:
            return {"": self._whole}
        found: dict[str, Expression] = {}
        _collect(self._fields or {}, "", found)
        return found

    @property
    def fast_path(self) -> bool:
        """Return True when every expression of the mapping is compiled."""
        return all(expr.fast_path for expr in self.expressions.values())

    def apply(
        self, event: dict[str, Any], bindings: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Map one event, as a CloudEvents JSON dict, to the output object."""
        if self._whole is not None:
            return _apply_whole(self._whole, event, bindings)
        assert self._fields is not None
        return _apply_fields(self._fields, event, bindings, prefix="")


def _compile_fields(spec: dict[Any, Any], prefix: str) -> _CompiledFields:
    if not spec:
        where = f"Mapping field {prefix!r}" if prefix else "The mapping"
        raise ConfigError(
            f"{where} has no output fields: give at least one field and its "
            "JSONata expression."
        )

    fields: _CompiledFields = {}
    for name, value in spec.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(
                f"Mapping output field name {name!r} under {prefix or 'the top'!r} "
                "is invalid: expected a non-empty string."
            )
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(value, dict):
            fields[name] = _compile_fields(value, path)
            continue
        if not isinstance(value, str):
            raise ConfigError(
                f"Mapping field {path!r} is {value!r}: expected a JSONata "
                "expression string such as 'data.item' (quote literals, as in "
                "'\"EA\"' or '5'), or a nested mapping."
            )
        try:
            fields[name] = compile_expression(value)
        except ConfigError as exc:
            raise ConfigError(f"Mapping field {path!r}: {exc}") from exc
    return fields


def _collect(
    fields: _CompiledFields, prefix: str, found: dict[str, Expression]
) -> None:
    for name, value in fields.items():
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(value, Expression):
            found[path] = value
        else:
            _collect(value, path, found)


def _apply_whole(
    expression: Expression, event: dict[str, Any], bindings: dict[str, Any] | None
) -> dict[str, Any]:
    result = expression.evaluate(event, bindings)
    if isinstance(result, dict):
        return result

    produced = "no value" if result is UNDEFINED else f"{result!r}"
    raise MappingError(
        f"Mapping expression {expression.source!r} produced {produced} for "
        f"{_describe_event(event)}: a mapping must produce a JSON object. Wrap "
        "the output fields in { ... } or map field by field.",
        expression=expression.source,
        event_id=_event_id(event),
    )


def _apply_fields(
    fields: _CompiledFields,
    event: dict[str, Any],
    bindings: dict[str, Any] | None,
    prefix: str,
) -> dict[str, Any]:
    output: dict[str, Any] = {}
    for name, value in fields.items():
        if not isinstance(value, Expression):
            path = f"{prefix}.{name}" if prefix else name
            output[name] = _apply_fields(value, event, bindings, path)
            continue
        try:
            result = value.evaluate(event, bindings)
        except MappingError as exc:
            path = f"{prefix}.{name}" if prefix else name
            raise MappingError(
                f"Mapping field {path!r} failed: {exc}",
                expression=exc.expression,
                event_id=exc.event_id,
            ) from exc
        # An undefined value leaves the field out, as a JSONata object
        # constructor does.
        if result is not UNDEFINED:
            output[name] = result
    return output


def _from_interpreter(raw: Any) -> Any:
    """Convert a raw jsonata-python result to plain JSON values with UNDEFINED."""
    if raw is None:
        return UNDEFINED
    return _plain(raw)


def _plain(value: Any) -> Any:
    if value is Utils.NULL_VALUE:
        return None
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _event_id(data: Any) -> str | None:
    if isinstance(data, dict) and isinstance(data.get("id"), str):
        return str(data["id"])
    return None


def _describe_event(data: Any) -> str:
    if not isinstance(data, dict):
        return f"an input of type {type(data).__name__} (expected an event as a dict)"
    event_id = data.get("id")
    event_type = data.get("type")
    if event_id is None:
        return "an event without an id"
    if event_type is None:
        return f"event {event_id!r}"
    return f"event {event_id!r} of type {event_type!r}"


def _runtime_error(source: str, data: Any, exc: Exception) -> MappingError:
    if isinstance(exc, JException):
        detail = f"{exc} (JSONata error {exc.error}"
        if exc.location and exc.location > 0:
            detail += f" near character {exc.location}"
        detail += ")"
    else:
        detail = f"{type(exc).__name__}: {exc}"
    return MappingError(
        f"JSONata expression {source!r} failed on {_describe_event(data)}: "
        f"{detail}. Check that the event carries the fields and value types "
        "that the expression expects.",
        expression=source,
        event_id=_event_id(data),
    )


def _syntax_error(expr: str, exc: Exception) -> ConfigError:
    code = getattr(exc, "error", None)
    location = getattr(exc, "location", None)
    where = f" near character {location}" if isinstance(location, int) else ""
    return ConfigError(
        f"JSONata expression {expr!r} is invalid{where}: {exc} (JSONata error "
        f"{code}). Correct the expression; https://docs.jsonata.org describes "
        "the syntax."
    )
