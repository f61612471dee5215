"""What the commands share: their typer options and arguments (declared once, as
`Annotated` aliases), the checks of what they are given before any request, defaults and
output helpers."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from lobeflow_runtime.protocol import DEFAULT_APP_URL as DEFAULT_APP_URL
from lobeflow_runtime.protocol import DEFAULT_QSTASH_URL as DEFAULT_QSTASH_URL
from typer.core import TyperGroup

from lobeflow.run.model import RunError

# Exit status after Ctrl-C, as shells report SIGINT.
EXIT_INTERRUPTED = 130
DEFAULT_TIMEOUT_S = 3600.0
DEFAULT_INTERVAL_S = 0.5
# Bounds of a watch: a shorter poll interval hammers QStash (Upstash bills its requests), a
# longer one shows nothing; past the timeout bound, watch again instead.
MIN_INTERVAL_S = 0.05
MAX_INTERVAL_S = 3600.0
MAX_TIMEOUT_S = 30 * 86_400.0

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
AllowHostOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-host",
        metavar="NAME",
        help="A host the port may be reached at besides the loopback ones: NAME, NAME:PORT "
        "or *.DOMAIN for its subdomains (repeatable; also LOBEFLOW_ALLOWED_HOSTS, "
        "comma-separated). Needed to listen on 0.0.0.0; makes the console ask for its "
        "access key.",
        show_default=False,
    ),
]
RestartOpt = Annotated[
    bool,
    typer.Option("--restart", help="Start failed runs over instead of resuming them."),
]


def check_watch_times(timeout: float, interval: float) -> None:
    """Refuse a watch that could not work, before anything starts.

    Raises:
        RunError: `--timeout` or `--interval` is not a finite number within its bounds
            (`nan` would never time out, `inf` crashes a sleep).
    """
    if not (math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT_S):
        raise RunError(
            f"--timeout must be a number of seconds above 0 and at most "
            f"{MAX_TIMEOUT_S:.0f} (30 days); got {timeout}."
        )
    if not (math.isfinite(interval) and MIN_INTERVAL_S <= interval <= MAX_INTERVAL_S):
        raise RunError(
            f"--interval must be a number of seconds from {MIN_INTERVAL_S} to "
            f"{MAX_INTERVAL_S:.0f}; got {interval}."
        )


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
