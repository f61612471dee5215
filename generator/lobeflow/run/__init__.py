"""Run generated workflows: dry-run statistics, passes watched to the end, run listings.

The library behind `lobeflow run` and `lobeflow runs`; it talks HTTP only, to the app and
to QStash (the local engine or Upstash).
"""

from lobeflow.run.client import AppClient, QStashClient
from lobeflow.run.model import ItemError, Progress, RunError, RunLog, Statistics, Summary
from lobeflow.run.runner import Runner, RunRow, WorkflowTarget, find_workflow, list_runs, show_run

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
