"""Five-field cron expressions (`minute hour day-of-month month day-of-week`), as QStash takes them.

Evaluation is cronsim's (the parser Healthchecks.io runs, written to match Debian's cron,
DST transitions included). On top of it this module keeps QStash's documented syntax:
exactly five fields of `*`, lists (`1,15`), ranges (`1-5`), steps (`*/10`, `5-50/5`), month
and weekday names (`JAN`, `MON`) and `7` as Sunday, with an optional `CRON_TZ=<zone>` prefix
(default UTC). cronsim's extensions (a seconds field, `L`, `LW`, `#`) and `@daily`-style
macros are refused, since QStash documents none of them. As in Vixie cron, when both day
fields are restricted a day matches if either matches.

Daylight saving time, in a zone that has it: a time inside the hour skipped in spring
fires once, at the end of the gap (02:30 fires at 03:00); a time inside the hour repeated
in autumn fires once, the first time. Expressions whose minute or hour field starts with
`*` fire by the clock, so in both repeated hours.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

_FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")
_MONTHS = frozenset(
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
)
_WEEKDAYS = frozenset(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])
_NAMES: tuple[frozenset[str], ...] = (frozenset(), frozenset(), frozenset(), _MONTHS, _WEEKDAYS)
_TOKEN = re.compile(r"[*]|[0-9]+|[A-Za-z]+")
_MACRO_EQUIVALENT = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# A fixed start for validating an expression once at parse time.
_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


class CronError(ValueError):
    """The expression is not a cron expression QStash takes; `reason` says why."""

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(f"{text}: {reason}")
        self.text = text
        self.reason = reason


def _check_syntax(text: str, fields: list[str]) -> None:
    """Refuse what cronsim would take but QStash does not document (`L`, `#`, `?`, `W`)."""
    for field, names, field_name in zip(fields, _NAMES, _FIELD_NAMES, strict=True):
        for part in field.split(","):
            base, slash, step = part.partition("/")
            tokens = base.split("-") if base != "*" else ["*"]
            if slash:
                tokens.append(step)
            for token in tokens:
                ok = _TOKEN.fullmatch(token) is not None and (
                    not token.isalpha() or token.upper() in names
                )
                if not ok:
                    raise CronError(text, f"bad {field_name} field {field!r}")


@dataclass(frozen=True, slots=True)
class Cron:
    """A validated cron expression and the zone its fields are read in.

    Attributes:
        text: The expression as given (with its `CRON_TZ=` prefix, if any).
        fields: The five fields.
        zone: The time zone the fields are read in.
    """

    text: str
    fields: str
    zone: dt.tzinfo

    @classmethod
    def parse(cls, text: str) -> Cron:
        """Parse `text`.

        Raises:
            CronError: The expression is malformed, uses syntax QStash does not take, can
                never match (`0 0 31 2 *`), or names an unknown time zone.
        """
        rest = text.strip()
        zone: dt.tzinfo = dt.UTC
        if rest.startswith("CRON_TZ="):
            zone_name, _, rest = rest[len("CRON_TZ=") :].partition(" ")
            try:
                zone = ZoneInfo(zone_name)
            except (ZoneInfoNotFoundError, ValueError):
                raise CronError(text, f"unknown time zone {zone_name!r}") from None
        rest = rest.strip()
        if rest.startswith("@"):
            macro = rest.split()[0].lower()
            hint = _MACRO_EQUIVALENT.get(macro)
            reason = "macros such as @daily are not part of QStash's cron syntax"
            raise CronError(text, reason + (f"; write {hint!r}" if hint else ""))
        fields = rest.split()
        if len(fields) != 5:
            raise CronError(
                text, "expected five fields: minute hour day-of-month month day-of-week"
            )
        _check_syntax(text, fields)
        expression = " ".join(fields)
        try:
            CronSim(expression, _EPOCH)
        except CronSimError as exc:
            raise CronError(text, f"{str(exc).lower()} field") from None
        return cls(text=text, fields=expression, zone=zone)

    def next_after(self, timestamp: float) -> float | None:
        """The first matching minute strictly after `timestamp` (unix seconds).

        Returns:
            Unix seconds, or `None` when the expression matches no time in the next 50 years.
        """
        start = dt.datetime.fromtimestamp(timestamp, self.zone)
        try:
            due = next(CronSim(self.fields, start))
        except StopIteration:
            return None
        return due.timestamp()
