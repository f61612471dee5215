"""Run generated workflows: dry-run statistics, passes watched to the end, run listings.

The library behind `lobeflow run` and `lobeflow runs`; it talks HTTP only, to the app and
to QStash (the local engine or Upstash).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lobeflow._lazy import lazy_attributes
from lobeflow.run.model import ItemError, Progress, RunError, RunLog, Statistics, Summary

if TYPE_CHECKING:
    from lobeflow.run.client import AppClient, QStashClient
    from lobeflow.run.runner import (
        Runner,
        RunRow,
        WorkflowTarget,
        find_workflow,
        list_runs,
        show_run,
    )

__all__ = [
    "AppClient",
    "ItemError",
    "Progress",
    "QStashClient",
    "RunError",
    "RunLog",
    "RunRow",
    "Runner",
    "Statistics",
    "Summary",
    "WorkflowTarget",
    "find_workflow",
    "list_runs",
    "show_run",
]

# The HTTP clients (httpx) load on first use, so `lobeflow --help` and `lobeflow new` start fast.
_LAZY = {
    "AppClient": "lobeflow.run.client",
    "QStashClient": "lobeflow.run.client",
    "Runner": "lobeflow.run.runner",
    "RunRow": "lobeflow.run.runner",
    "WorkflowTarget": "lobeflow.run.runner",
    "find_workflow": "lobeflow.run.runner",
    "list_runs": "lobeflow.run.runner",
    "show_run": "lobeflow.run.runner",
}

__getattr__ = lazy_attributes(globals(), _LAZY)
