"""Text (ruff-like) and JSON renderings of a check result."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from lobeflow.check.runner import CheckResult
from lobeflow.terminal import printable

JSON_VERSION = 1


def as_json_data(result: CheckResult) -> dict[str, Any]:
    """The documented JSON document (schema in docs/check.md)."""
    counts = Counter(finding.code for finding in result.findings)
    return {
        "version": JSON_VERSION,
        "summary": {
            "files": result.files,
            "routes": result.routes,
            "findings": len(result.findings),
            "by_code": dict(sorted(counts.items())),
        },
        "rules": result.codes,
        "findings": [finding.as_dict() for finding in result.findings],
    }


def render_json(result: CheckResult) -> str:
    """The JSON document, indented, with a trailing newline."""
    return json.dumps(as_json_data(result), indent=2) + "\n"


def render_text(result: CheckResult) -> str:
    """One `path:line:col: CODE message` line per finding, then a summary line.

    File names and the names quoted in messages come from the checked code: escaped.
    """
    lines = [
        f"{printable(finding.path)}:{finding.line}:{finding.column}: {finding.code} "
        f"{printable(finding.message)}"
        for finding in result.findings
    ]
    checked = f"{result.files} file{'s' * (result.files != 1)}, {result.routes} route{'s' * (result.routes != 1)}"
    if result.findings:
        count = len(result.findings)
        lines.append(f"Found {count} finding{'s' * (count != 1)} ({checked} checked).")
    else:
        lines.append(f"All checks passed ({checked} checked).")
    return "\n".join(lines) + "\n"
