"""`lobeflow check`: static conformance checks of Upstash Workflow code (no imports of it)."""

from __future__ import annotations

from lobeflow.check.model import RULES, Finding, Rule
from lobeflow.check.runner import CheckError, CheckResult, run_check

__all__ = ["RULES", "CheckError", "CheckResult", "Finding", "Rule", "run_check"]
