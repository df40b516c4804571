"""Read X12 dates and times (DTM, BSN) into timezone-aware datetimes.

Dates are CCYYMMDD, or YYMMDD in versions before 004010 (years below 50 are
read as 20YY). Times are HHMM, HHMMSS or HHMMSS with decimal seconds, which
are dropped. DTM04 names the time zone; without it, or with 'LT' (local
time), the source's configured zone applies.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

from plantbus.formats.shipnotice import is_ascii_digits
from plantbus.formats.x12.segments import Segment

# AK403 element codes (723) for dates and times.
ELEMENT_INVALID_CODE = "7"
ELEMENT_INVALID_DATE = "8"
ELEMENT_INVALID_TIME = "9"

# DTM04 time codes (623) with a fixed offset in hours.
_FIXED_ZONES = {
    "UT": 0, "GM": 0, "ED": -4, "ES": -5, "CD": -5, "CS": -6, "MD": -6, "MS": -7,
    "PD": -7, "PS": -8, "AD": -8, "AS": -9, "HD": -9, "HS": -10, "TD": -3, "TS": -4,
}  # fmt: skip
# DTM04 time codes that follow daylight saving time, as IANA zones.
_ZONES = {
    "ET": "America/New_York", "CT": "America/Chicago", "MT": "America/Denver",
    "PT": "America/Los_Angeles", "AT": "America/Anchorage", "HT": "Pacific/Honolulu",
    "TT": "America/Halifax", "NT": "America/St_Johns",
}  # fmt: skip


class InvalidMoment(ValueError):
    """A date, time or time code element broke its rule."""

    def __init__(self, element: int, code: str, rule: str) -> None:
        super().__init__(rule)
        self.element = element
        self.code = code
        self.rule = rule


def read_moment(
    segment: Segment,
    date_at: int,
    time_at: int,
    zone_at: int | None,
    default_zone: tzinfo,
) -> datetime | None:
    """Return the moment of a date, time and time code element, or None."""
    date, clock = segment.element(date_at), segment.element(time_at)
    if not date:
        return None
    if len(date) == 6 and is_ascii_digits(date):
        century = "20" if int(date[:2]) < 50 else "19"
        date = century + date
    match = re.fullmatch(r"([0-9]{4})([0-9]{2})([0-9]{2})", date)
    try:
        if match is None:
            raise ValueError(date)
        year, month, day_of_month = (int(part) for part in match.groups())
        moment = datetime(year, month, day_of_month)
    except ValueError:
        raise InvalidMoment(
            date_at, ELEMENT_INVALID_DATE, "the date must be a calendar date CCYYMMDD"
        ) from None
    if clock:
        found = re.fullmatch(r"([0-9]{2})([0-9]{2})([0-9]{2})?[0-9]*", clock)
        hour, minute, second = found.groups(default="0") if found else ("99",) * 3
        if int(hour) > 23 or int(minute) > 59 or int(second) > 59:
            raise InvalidMoment(
                time_at, ELEMENT_INVALID_TIME, "the time must be HHMM or HHMMSS"
            )
        moment = moment.replace(hour=int(hour), minute=int(minute), second=int(second))
    return moment.replace(tzinfo=_zone(segment, zone_at, default_zone))


def _zone(segment: Segment, zone_at: int | None, default_zone: tzinfo) -> tzinfo:
    code = segment.element(zone_at) if zone_at else ""
    if not code or code == "LT":
        return default_zone
    if code in _FIXED_ZONES:
        return timezone(timedelta(hours=_FIXED_ZONES[code]))
    if code in _ZONES:
        return ZoneInfo(_ZONES[code])
    # NOTE: the numeric time codes 01 to 24 are not supported.
    raise InvalidMoment(
        zone_at or 0,
        ELEMENT_INVALID_CODE,
        "DTM04 must be a time code such as 'UT', 'ET' or 'LT'",
    )
