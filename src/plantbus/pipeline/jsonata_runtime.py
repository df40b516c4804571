"""Values and built-in functions that compiled JSONata closures call at run time.

JSON null is Python None and JSONata's "undefined" (no value) is `UNDEFINED`.
Where jsonata-python formats a value as text or runs a built-in function, the
helpers here call its own `Functions` code after checking the argument types
that the function's signature accepts. Any other argument raises
`FallbackNeeded`, so the interpreter produces the result or the error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from jsonata import Functions, Utils  # type: ignore[import-untyped]

# A compiled expression, called with the root input (always a dict) and the
# caller's variable bindings.
Compiled = Callable[[dict[str, Any], Mapping[str, Any] | None], Any]

# Below this magnitude jsonata-python formats an integer exactly as str() does.
# From 10**15 on it rounds to 15 significant digits ("1e+15").
_EXACT_INT_LIMIT: Final = 10**15


class _Undefined:
    """JSONata's "undefined": the result of a path that matches nothing."""

    __slots__ = ()
    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False

    def __copy__(self) -> _Undefined:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _Undefined:
        return self

    def __reduce__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Final = _Undefined()


class FallbackNeeded(Exception):
    """A compiled closure met data outside its subset; run the interpreter instead."""


def to_text(value: Any) -> str:
    """Return a value as text the way JSONata's & operator converts it."""
    if value.__class__ is str:
        return value
    if value is UNDEFINED:
        return ""
    return stringify(value)


def stringify(value: Any) -> str:
    """Format a defined value as jsonata-python's $string does."""
    if value.__class__ is str:
        return value
    if value is None:
        return "null"
    if value.__class__ is int and -_EXACT_INT_LIMIT < value < _EXACT_INT_LIMIT:
        return str(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    try:
        text = Functions.string(value, None)
    except Exception as exc:
        # The interpreter raises its own error for values it cannot format.
        raise FallbackNeeded from exc
    if not isinstance(text, str):
        raise FallbackNeeded
    return text


def _native_result(value: Any) -> Any:
    """Convert a jsonata Functions result as jsonata-python's call wrapper does."""
    if value is None:
        return UNDEFINED
    try:
        if Utils.is_numeric(value):
            return Utils.convert_number(value)
    except Exception as exc:
        raise FallbackNeeded from exc
    return value


def _string_function(argument: Compiled) -> Compiled:
    def string(root: dict[str, Any], env: Mapping[str, Any] | None) -> Any:
        value = argument(root, env)
        if value is UNDEFINED:
            return UNDEFINED
        return stringify(value)

    return string


def _number_function(argument: Compiled) -> Compiled:
    def number(root: dict[str, Any], env: Mapping[str, Any] | None) -> Any:
        value = argument(root, env)
        if value is UNDEFINED:
            return UNDEFINED
        if value.__class__ not in (str, int, float, bool):
            raise FallbackNeeded
        try:
            result = Functions.number(value)
        except Exception as exc:
            raise FallbackNeeded from exc
        return _native_result(result)

    return number


def _text_function(method: Callable[[str], Any]) -> Callable[[Compiled], Compiled]:
    def build(argument: Compiled) -> Compiled:
        def text_function(root: dict[str, Any], env: Mapping[str, Any] | None) -> Any:
            value = argument(root, env)
            if value is UNDEFINED:
                return UNDEFINED
            if value.__class__ is not str:
                raise FallbackNeeded
            return method(value)

        return text_function

    return build


def _is_number(value: Any) -> bool:
    return value.__class__ in (int, float)


def _substring_function(
    text_of: Compiled, start_of: Compiled, length_of: Compiled | None = None
) -> Compiled:
    def substring(root: dict[str, Any], env: Mapping[str, Any] | None) -> Any:
        text = text_of(root, env)
        start = start_of(root, env)
        length = UNDEFINED if length_of is None else length_of(root, env)
        if text is not UNDEFINED and text.__class__ is not str:
            raise FallbackNeeded
        if start is not UNDEFINED and not _is_number(start):
            raise FallbackNeeded
        if length is not UNDEFINED and not _is_number(length):
            raise FallbackNeeded
        try:
            result = Functions.substring(
                None if text is UNDEFINED else text,
                None if start is UNDEFINED else start,
                None if length is UNDEFINED else length,
            )
        except Exception as exc:
            raise FallbackNeeded from exc
        return _native_result(result)

    return substring


def _exists_function(argument: Compiled) -> Compiled:
    def exists(root: dict[str, Any], env: Mapping[str, Any] | None) -> bool:
        return argument(root, env) is not UNDEFINED

    return exists


# (function name, argument count) -> builder of the compiled call.
FUNCTIONS: Final[dict[tuple[str, int], Callable[..., Compiled]]] = {
    ("string", 1): _string_function,
    ("number", 1): _number_function,
    ("uppercase", 1): _text_function(Functions.uppercase),
    ("lowercase", 1): _text_function(Functions.lowercase),
    ("trim", 1): _text_function(Functions.trim),
    ("substring", 2): _substring_function,
    ("substring", 3): _substring_function,
    ("exists", 1): _exists_function,
}
