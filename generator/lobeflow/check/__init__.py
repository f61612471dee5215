"""`lobeflow check`: static conformance checks of Upstash Workflow code (no imports of it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lobeflow._lazy import lazy_attributes

if TYPE_CHECKING:
    from lobeflow.check.model import RULES, Finding, Rule
    from lobeflow.check.runner import CheckError, CheckResult, run_check

__all__ = ["RULES", "CheckError", "CheckResult", "Finding", "Rule", "run_check"]

# The rules load on first use, so other commands (`lobeflow --help`, `new`) start quickly.
_LAZY = {
    "RULES": "lobeflow.check.runner",  # the runner registers every rule
    "CheckError": "lobeflow.check.runner",
    "CheckResult": "lobeflow.check.runner",
    "Finding": "lobeflow.check.model",
    "Rule": "lobeflow.check.model",
    "run_check": "lobeflow.check.runner",
}

__getattr__ = lazy_attributes(globals(), _LAZY)
