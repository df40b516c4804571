"""Turn the text of one cell into a decimal string, an integer or an RFC 3339 time."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from plantbus.formats.flatfile.layout import FlatFileLayout


class CellError(ValueError):
    """A cell's text breaks a rule; the message is the rule."""


def to_decimal(text: str, layout: FlatFileLayout) -> str:
    """Return `text` as a plain decimal string with '.' as the decimal point."""
    point = re.escape(layout.decimal_separator)
    grouped = ""
    if layout.thousands_separator is not None:
        group = re.escape(layout.thousands_separator)
        grouped = rf"|[+-]?[0-9]{{1,3}}(?:{group}[0-9]{{3}})+"
    pattern = rf"(?:[+-]?[0-9]+{grouped})(?:{point}[0-9]+)?"
    if re.fullmatch(pattern, text, flags=re.ASCII) is None:
        example = f"1{layout.thousands_separator or ''}234{layout.decimal_separator}5"
        raise CellError(
            f"expected a decimal number with {layout.decimal_separator!r} as "
            f"decimal separator, such as {example!r}"
        )

    if layout.thousands_separator is not None:
        text = text.replace(layout.thousands_separator, "")
    text = text.replace(layout.decimal_separator, ".")
    try:
        value = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only numbers
        raise CellError("expected a decimal number") from None
    return format(value, "f")


def to_integer(text: str) -> int:
    """Return `text` as an integer of at most 18 digits."""
    if re.fullmatch(r"[+-]?[0-9]{1,18}", text, flags=re.ASCII) is None:
        raise CellError("expected a whole number of at most 18 digits, such as '42'")
    return int(text)


def to_date(text: str, fmt: str | None) -> str:
    """Return `text` as an ISO 8601 date, read with the strptime format `fmt`."""
    try:
        if fmt is None:
            return date.fromisoformat(text).isoformat()
        return datetime.strptime(text, fmt).date().isoformat()
    except ValueError:
        raise CellError(
            f"expected a date in the format {fmt or 'YYYY-MM-DD'!r}"
        ) from None


def to_timestamp(text: str, fmt: str | None, layout: FlatFileLayout) -> str:
    """Return `text` as an RFC 3339 time with the UTC offset of its time zone."""
    try:
        moment = (
            datetime.fromisoformat(text)
            if fmt is None
            else datetime.strptime(text, fmt)
        )
    except ValueError:
        raise CellError(
            f"expected a time in the format {fmt or 'ISO 8601'!r}"
        ) from None
    # The bounds keep the conversion to UTC clear of datetime's year limits.
    if not 2 <= moment.year <= 9998:
        raise CellError("lies outside the years 2 to 9998")
    if moment.tzinfo is None:
        zone = layout.zone()
        if zone is None:
            raise CellError(
                "has no UTC offset and the layout sets no `timezone`; set the "
                "plant's time zone, such as Europe/Berlin"
            )
        moment = _localize(moment, zone, layout.ambiguous_time)
    return moment.isoformat()


def _localize(naive: datetime, zone: ZoneInfo, ambiguous: str) -> datetime:
    """Attach `zone` to a local time; reject a time that the clock skipped."""
    earlier = naive.replace(tzinfo=zone, fold=0)
    later = naive.replace(tzinfo=zone, fold=1)
    # A skipped time (clocks go forward) does not survive a round trip to UTC.
    if earlier.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != naive:
        raise CellError(
            f"does not exist in time zone {zone.key} because the clocks were "
            f"put forward; check the source system's clock"
        )
    if earlier.utcoffset() == later.utcoffset():
        return earlier
    if ambiguous == "earlier":
        return earlier
    if ambiguous == "later":
        return later
    raise CellError(
        f"occurs twice in time zone {zone.key} because the clocks were put "
        f"back; set `ambiguous_time` to earlier or later to accept it"
    )
