"""`lobeflow run` and `lobeflow runs`: the thin CLI skin over `lobeflow.run.runner`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from lobeflow.engine.config import DEV_TOKEN
from lobeflow.project import ProjectError, find_project_root, list_workflows
from lobeflow.run.model import (
    COMPLETED,
    INTERRUPTED,
    JSON_SCHEMA_VERSION,
    RUN_STATES,
    RunError,
)

if TYPE_CHECKING:
    from lobeflow.run.runner import WorkflowTarget

DEFAULT_APP_URL = "http://127.0.0.1:8000"
DEFAULT_QSTASH_URL = "http://127.0.0.1:8080"
# Exit status after Ctrl-C, as shells report SIGINT.
EXIT_INTERRUPTED = 130
# Console width of `runs --wide`: enough for any row, so nothing is cut or folded.
WIDE_COLUMNS = 1000

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


def _targets(project: Path, app_url: str) -> list[WorkflowTarget]:
    from lobeflow.run.runner import WorkflowTarget

    root = find_project_root(project)
    return [WorkflowTarget.from_workflow(info, app_url) for info in list_workflows(root)]


def _target(project: Path, app_url: str, workflow: str) -> WorkflowTarget:
    from lobeflow.run.runner import WorkflowTarget, find_workflow

    root = find_project_root(project)
    info = find_workflow(list_workflows(root), workflow)
    return WorkflowTarget.from_workflow(info, app_url)


def _print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    sys.stdout.flush()


def _consoles() -> tuple[Any, Any]:
    from rich.console import Console

    return Console(highlight=False), Console(stderr=True, highlight=False)


def run(
    workflow: Annotated[str, typer.Argument(help="Workflow name, e.g. welcome-placeholder.")],
    *,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the statistics only; start nothing.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Process every eligible item, done ones too.")
    ] = False,
    json_output: JsonOpt = False,
    watch: Annotated[
        str | None,
        typer.Option("--watch", metavar="RUN_ID", help="Watch a pass already started."),
    ] = None,
    cancel: Annotated[
        str | None,
        typer.Option("--cancel", metavar="RUN_ID", help="Cancel every running run of a pass."),
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds to watch before giving up (the pass goes on).")
    ] = 3600.0,
    interval: Annotated[float, typer.Option(help="Seconds between progress polls.")] = 0.5,
    project: ProjectOpt = Path("."),
    app_url: AppUrlOpt = DEFAULT_APP_URL,
    qstash_url: QStashUrlOpt = DEFAULT_QSTASH_URL,
    token: TokenOpt = DEV_TOKEN,
) -> None:
    """Run a workflow: a dry run, or a pass watched to the end with a progress bar."""
    from lobeflow.run.client import AppClient, QStashClient
    from lobeflow.run.progress import (
        ProgressView,
        interrupted_hint,
        statistics_table,
        summary_view,
    )
    from lobeflow.run.runner import Runner

    if sum(map(bool, (dry_run, watch, cancel))) > 1:
        raise RunError("Give at most one of --dry-run, --watch and --cancel.")
    if timeout <= 0 or interval <= 0:
        raise RunError("--timeout and --interval must be positive.")
    target = _target(project, app_url, workflow)
    runner = Runner(target, QStashClient(qstash_url, token), AppClient(app_url))
    out, err = _consoles()
    try:
        if dry_run:
            stats = runner.dry_run(force=force)
            if json_output:
                _print_json(
                    {
                        "schemaVersion": JSON_SCHEMA_VERSION,
                        "workflow": target.name,
                        "dryRun": True,
                        "force": force,
                        "statistics": stats.to_json(),
                    }
                )
            else:
                out.print(statistics_table(target.name, stats, force=force))
            return
        if cancel is not None:
            cancelled = runner.cancel(cancel)
            if json_output:
                _print_json(
                    {
                        "schemaVersion": JSON_SCHEMA_VERSION,
                        "workflow": target.name,
                        "runId": cancel,
                        "cancelled": cancelled,
                    }
                )
            else:
                out.print(f"Cancelled {cancelled} running run(s) of pass {cancel}.")
            return
        run_id = watch or runner.start(force=force)
        if json_output:
            summary = runner.watch(run_id, timeout=timeout, interval=interval)
            _print_json(summary.to_json())
        else:
            verb = "Watching" if watch else "Started"
            err.print(
                f"{verb} pass [bold]{run_id}[/] of {target.name} via {runner.qstash.base_url}"
            )
            with ProgressView(err, target.name) as view:
                summary = runner.watch(
                    run_id, on_progress=view.update, timeout=timeout, interval=interval
                )
            out.print(summary_view(summary))
        if summary.outcome == INTERRUPTED:
            err.print(interrupted_hint(target.name, run_id))
            raise typer.Exit(EXIT_INTERRUPTED)
        if summary.outcome != COMPLETED:
            raise typer.Exit(1)
    finally:
        runner.close()


class _ListByDefault(TyperGroup):
    """`lobeflow runs [WORKFLOW]` lists runs; `lobeflow runs show RUN_ID` shows one."""

    # `ctx` is typer's own click Context; Any keeps this override valid for mypy.
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Route anything that is not a subcommand (or help) to `list`."""
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


runs_app = typer.Typer(
    cls=_ListByDefault,
    help="Recent workflow runs (`runs [WORKFLOW]`) and the steps of one (`runs show RUN_ID`).",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _state_filter(state: str | None) -> str | None:
    if state is None:
        return None
    wanted = state.strip().upper()
    wanted = wanted if wanted.startswith("RUN_") else "RUN_" + wanted
    if wanted == "RUN_CANCELLED":
        wanted = "RUN_CANCELED"
    if wanted not in RUN_STATES:
        known = ", ".join(name.removeprefix("RUN_").lower() for name in RUN_STATES)
        raise RunError(f"Unknown state {state!r}; one of: {known}.")
    return wanted


@runs_app.command("list")
def list_command(
    workflow: Annotated[
        str | None, typer.Argument(help="Only this workflow (default: all of the project's).")
    ] = None,
    *,
    state: Annotated[
        str | None,
        typer.Option(help="Only runs in this state: started, success, failed, canceled."),
    ] = None,
    limit: Annotated[int, typer.Option(help="How many runs, newest first.")] = 20,
    wide: Annotated[
        bool, typer.Option("--wide", help="Full run ids, items and errors (wider than 80 columns).")
    ] = False,
    json_output: JsonOpt = False,
    project: ProjectOpt = Path("."),
    app_url: AppUrlOpt = DEFAULT_APP_URL,
    qstash_url: QStashUrlOpt = DEFAULT_QSTASH_URL,
    token: TokenOpt = DEV_TOKEN,
) -> None:
    """Recent runs of the project's workflows: layer, item, state, steps, duration, errors."""
    from lobeflow.run.client import QStashClient
    from lobeflow.run.progress import runs_table
    from lobeflow.run.runner import list_runs

    wanted_state = _state_filter(state)
    if limit < 1:
        raise RunError("--limit must be at least 1.")
    targets = [_target(project, app_url, workflow)] if workflow else _targets(project, app_url)
    qstash = QStashClient(qstash_url, token)
    try:
        rows = list_runs(qstash, targets, state=wanted_state, limit=limit)
    finally:
        qstash.close()
    if json_output:
        _print_json({"schemaVersion": JSON_SCHEMA_VERSION, "runs": [row.to_json() for row in rows]})
        return
    out, _ = _consoles()
    if rows:
        width = out.width
        if wide:  # as wide as the table needs: lines longer than the terminal, nothing cut
            out.width = max(out.width, WIDE_COLUMNS)
        out.print(runs_table(rows, width=None if wide else width))
    else:
        out.print("No runs.")


@runs_app.command("show")
def show_command(
    run_id: Annotated[
        str, typer.Argument(help="The run id: in full, as `runs` shortens it, or a unique prefix.")
    ],
    *,
    json_output: JsonOpt = False,
    project: ProjectOpt = Path("."),
    app_url: AppUrlOpt = DEFAULT_APP_URL,
    qstash_url: QStashUrlOpt = DEFAULT_QSTASH_URL,
    token: TokenOpt = DEV_TOKEN,
) -> None:
    """The steps of one run, with their outputs and errors."""
    from lobeflow.run.client import QStashClient
    from lobeflow.run.progress import run_view
    from lobeflow.run.runner import show_run

    try:
        targets = _targets(project, app_url)
    except ProjectError:
        targets = []  # outside a project the run is still shown, without its workflow
    qstash = QStashClient(qstash_url, token)
    try:
        row = show_run(qstash, targets, run_id)
    finally:
        qstash.close()
    if json_output:
        _print_json({"schemaVersion": JSON_SCHEMA_VERSION, **row.to_json(steps=True)})
        return
    out, _ = _consoles()
    out.print(run_view(row))
