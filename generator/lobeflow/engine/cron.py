"""Five-field cron expressions (`minute hour day-of-month month day-of-week`), as QStash takes them.

Supports `*`, lists (`1,15`), ranges (`1-5`), steps (`*/10`, `5-50/5`), month and weekday
names (`JAN`, `MON`), `7` as Sunday, and an optional `CRON_TZ=<zone>` prefix (default UTC).
As in Vixie cron, when both day fields are restricted a day matches if either matches.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_MONTHS = {
    name: index
    for index, name in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"],
        start=1,
    )
}
_WEEKDAYS = {
    name: index for index, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])
}
# (low, high, names) per field.
_FIELDS: tuple[tuple[int, int, dict[str, int]], ...] = (
    (0, 59, {}),
    (0, 23, {}),
    (1, 31, {}),
    (1, 12, _MONTHS),
    (0, 7, _WEEKDAYS),
)
# Every date pattern recurs within 28 years (the Gregorian weekday/leap-year cycle within a
# century), so a search this long either finds a time or proves there is none (`30 2 31 2 *`).
_SEARCH_DAYS = 366 * 28


class CronError(ValueError):
    """The expression is not a valid five-field cron expression."""


def _parse_value(text: str, names: dict[str, int]) -> int:
    upper = text.upper()
    if upper in names:
        return names[upper]
    if not text.isdigit():
        raise CronError(text)
    return int(text)


def _parse_field(text: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(part)
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _parse_value(first, names), _parse_value(last, names)
        else:
            start = _parse_value(base, names)
            # `5/15` means "from 5 to the end, every 15".
            end = high if slash else start
        if not low <= start <= end <= high:
            raise CronError(part)
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True, slots=True)
class Cron:
    """A parsed cron expression.

    Attributes:
        text: The expression as given.
        minutes: Matching minutes (0-59).
        hours: Matching hours (0-23).
        days: Matching days of the month (1-31).
        months: Matching months (1-12).
        weekdays: Matching weekdays (0 = Sunday ... 6).
        days_any: The day-of-month field was `*`.
        weekdays_any: The day-of-week field was `*`.
        zone: The time zone the fields are read in.
    """

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    days_any: bool
    weekdays_any: bool
    zone: dt.tzinfo

    @classmethod
    def parse(cls, text: str) -> Cron:
        """Parse `text`.

        Raises:
            CronError: The expression is malformed or names an unknown time zone.
        """
        rest = text.strip()
        zone: dt.tzinfo = dt.UTC
        if rest.startswith("CRON_TZ="):
            zone_name, _, rest = rest[len("CRON_TZ=") :].partition(" ")
            try:
                zone = ZoneInfo(zone_name)
            except (ZoneInfoNotFoundError, ValueError):
                raise CronError(text) from None
        parts = rest.split()
        if len(parts) != 5:
            raise CronError(text)
        try:
            fields = [
                _parse_field(part, low, high, names)
                for part, (low, high, names) in zip(parts, _FIELDS, strict=True)
            ]
        except CronError:
            raise CronError(text) from None
        weekdays = frozenset(day % 7 for day in fields[4])
        return cls(
            text=text,
            minutes=fields[0],
            hours=fields[1],
            days=fields[2],
            months=fields[3],
            weekdays=weekdays,
            days_any=parts[2].startswith("*"),
            weekdays_any=parts[4].startswith("*"),
            zone=zone,
        )

    def _day_matches(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        in_days = day.day in self.days
        in_weekdays = (day.isoweekday() % 7) in self.weekdays
        if self.days_any or self.weekdays_any:
            return in_days and in_weekdays
        return in_days or in_weekdays

    def next_after(self, timestamp: float) -> float | None:
        """The first matching minute strictly after `timestamp` (unix seconds).

        Returns:
            Unix seconds, or `None` when the expression never matches.
        """
        start = dt.datetime.fromtimestamp(timestamp, self.zone).replace(second=0, microsecond=0)
        start += dt.timedelta(minutes=1)
        day = start.date()
        hours = sorted(self.hours)
        minutes = sorted(self.minutes)
        for offset in range(_SEARCH_DAYS):
            current = day + dt.timedelta(days=offset)
            if not self._day_matches(current):
                continue
            for hour in hours:
                for minute in minutes:
                    candidate = dt.datetime(
                        current.year, current.month, current.day, hour, minute, tzinfo=self.zone
                    )
                    if candidate >= start:
                        return candidate.timestamp()
        return None
