"""What the `run`, `runs`, `retry` and `dlq` commands share: their typer options and
arguments (declared once, as `Annotated` aliases), defaults and output helpers."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from lobeflow.project import find_project_root, list_workflows
from lobeflow.run.model import RunError

if TYPE_CHECKING:
    from lobeflow.run.runner import WorkflowTarget

DEFAULT_APP_URL = "http://127.0.0.1:8000"
DEFAULT_QSTASH_URL = "http://127.0.0.1:8080"
# Exit status after Ctrl-C, as shells report SIGINT.
EXIT_INTERRUPTED = 130
DEFAULT_TIMEOUT_S = 3600.0
DEFAULT_INTERVAL_S = 0.5

WorkflowArg = Annotated[str, typer.Argument(help="Workflow name, e.g. welcome-placeholder.")]
ProjectOpt = Annotated[
    Path, typer.Option("--project", "-p", help="A directory inside the project.")
]
AppUrlOpt = Annotated[
    str,
    typer.Option("--app-url", envvar="APP_URL", help="Where the app runs (the app's own APP_URL)."),
]
QStashUrlOpt = Annotated[
    str,
    typer.Option(
        "--qstash-url", envvar="QSTASH_URL", help="QStash base URL (local engine or Upstash)."
    ),
]
TokenOpt = Annotated[
    str,
    typer.Option(
        "--token",
        envvar="QSTASH_TOKEN",
        show_default=False,
        help="QStash token [default: the local engine's dev token].",
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON object (docs/run.md), nothing else.")
]
TimeoutOpt = Annotated[
    float,
    typer.Option(help="Seconds to watch before giving up (what was started goes on)."),
]
IntervalOpt = Annotated[float, typer.Option(help="Seconds between progress polls.")]
RestartOpt = Annotated[
    bool,
    typer.Option("--restart", help="Start failed runs over instead of resuming them."),
]


def check_watch_times(timeout: float, interval: float) -> None:
    """Refuse a watch that could not work.

    Raises:
        RunError: `--timeout` or `--interval` is not positive.
    """
    if timeout <= 0 or interval <= 0:
        raise RunError("--timeout and --interval must be positive.")


def project_targets(project: Path, app_url: str) -> list[WorkflowTarget]:
    """Every workflow of the project around `project`, served at `app_url`."""
    from lobeflow.run.runner import WorkflowTarget

    root = find_project_root(project)
    return [WorkflowTarget.from_workflow(info, app_url) for info in list_workflows(root)]


def find_target(project: Path, app_url: str, workflow: str) -> WorkflowTarget:
    """The project's workflow called `workflow`, served at `app_url`."""
    from lobeflow.run.runner import WorkflowTarget, find_workflow

    root = find_project_root(project)
    info = find_workflow(list_workflows(root), workflow)
    return WorkflowTarget.from_workflow(info, app_url)


def print_json(payload: Any) -> None:
    """Print one JSON document on stdout (the `--json` output)."""
    sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    sys.stdout.flush()


def consoles() -> tuple[Any, Any]:
    """rich consoles on stdout (results) and stderr (progress and notes)."""
    from rich.console import Console

    return Console(highlight=False), Console(stderr=True, highlight=False)


class ListByDefault(TyperGroup):
    """A command group whose bare form lists: `runs [WORKFLOW]`, `dlq` (= `dlq list`)."""

    # `ctx` is typer's own click Context; Any keeps this override valid for mypy.
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Route anything that is not a subcommand (or help) to `list`."""
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = ["list", *args]
        return super().parse_args(ctx, args)
