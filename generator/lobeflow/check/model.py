"""Findings and the rule registry of `lobeflow check`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lobeflow.check.analysis import Project


@dataclass(frozen=True, order=True)
class Finding:
    """One violation, located like a ruff diagnostic.

    Ordering is by path, then position, then code, so reports are stable.
    """

    path: str
    line: int
    column: int
    code: str
    message: str
    route: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (see docs/check.md)."""
        return {
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "code": self.code,
            "rule": RULES[self.code].name if self.code in RULES else None,
            "message": self.message,
            "route": self.route,
        }


Check = Callable[["Project"], Iterable[Finding]]


@dataclass(frozen=True)
class Rule:
    """A rule: a stable code, a kebab-case name, a one-line summary and its check."""

    code: str
    name: str
    summary: str
    check: Check

    @property
    def family(self) -> str:
        """The family prefix (`LF1` for `LF101`)."""
        return self.code[:3]


RULES: dict[str, Rule] = {}


def rule(code: str, name: str, summary: str) -> Callable[[Check], Check]:
    """Register a check function under a stable code.

    Args:
        code: `LF` + three digits; the hundreds digit is the family.
        name: kebab-case name shown in JSON output and the docs.
        summary: one line for the rule table.

    Returns:
        A decorator that registers the function and returns it unchanged.
    """

    def register(check: Check) -> Check:
        if code in RULES:
            raise ValueError(f"rule code {code} registered twice")
        RULES[code] = Rule(code, name, summary, check)
        return check

    return register


def matches(code: str, patterns: Iterable[str]) -> bool:
    """Whether `code` is selected by any of `patterns` (a full code or a prefix: `LF1`, `LF`)."""
    return any(code.startswith(pattern.upper()) for pattern in patterns)


def selected_codes(select: Iterable[str] | None, ignore: Iterable[str] | None) -> Iterator[str]:
    """The registered codes left after `--select` (default: all) and `--ignore`."""
    chosen = list(select) if select else ["LF"]
    dropped = list(ignore or ())
    for code in sorted(RULES):
        if matches(code, chosen) and not matches(code, dropped):
            yield code
