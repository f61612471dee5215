"""`lobeflow run` and `lobeflow runs`: the thin CLI skin over `lobeflow.run.runner`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from lobeflow_runtime.protocol import DEV_TOKEN

from lobeflow.commands.options import (
    DEFAULT_APP_URL,
    DEFAULT_INTERVAL_S,
    DEFAULT_QSTASH_URL,
    DEFAULT_TIMEOUT_S,
    EXIT_INTERRUPTED,
    AppUrlOpt,
    IntervalOpt,
    JsonOpt,
    ListByDefault,
    ProjectOpt,
    QStashUrlOpt,
    TimeoutOpt,
    TokenOpt,
    WorkflowArg,
    check_watch_times,
    consoles,
    print_json,
)
from lobeflow.project import ProjectError
from lobeflow.run.ids import check_run_id
from lobeflow.run.model import (
    COMPLETED,
    INTERRUPTED,
    JSON_SCHEMA_VERSION,
    RUN_STATES,
    RunError,
)
from lobeflow.terminal import plain

# Console width of `runs --wide`: enough for any row, so nothing is cut or folded.
WIDE_COLUMNS = 1000


def run(
    workflow: WorkflowArg,
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
        typer.Option(
            "--watch",
            metavar="RUN_ID",
            help="Watch a pass already started (its id, or the end of it).",
        ),
    ] = None,
    cancel: Annotated[
        str | None,
        typer.Option("--cancel", metavar="RUN_ID", help="Cancel every running run of a pass."),
    ] = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
    interval: IntervalOpt = DEFAULT_INTERVAL_S,
    project: ProjectOpt = Path("."),
    app_url: AppUrlOpt = DEFAULT_APP_URL,
    qstash_url: QStashUrlOpt = DEFAULT_QSTASH_URL,
    token: TokenOpt = DEV_TOKEN,
) -> None:
    """Run a workflow: a dry run, or a pass watched to the end with a progress bar."""
    from rich.text import Text

    from lobeflow.run.client import AppClient, QStashClient
    from lobeflow.run.progress import (
        ProgressView,
        interrupted_hint,
        statistics_table,
        summary_view,
    )
    from lobeflow.run.runner import Runner, find_target

    # Before anything is asked or started: `--watch ""` used to start a new pass.
    if watch is not None:
        check_run_id(watch, "--watch")
    if cancel is not None:
        check_run_id(cancel, "--cancel")
    if sum((dry_run, watch is not None, cancel is not None)) > 1:
        raise RunError("Give at most one of --dry-run, --watch and --cancel.")
    check_watch_times(timeout, interval)
    target = find_target(project, app_url, workflow)
    runner = Runner(target, QStashClient(qstash_url, token), AppClient(app_url))
    out, err = consoles()
    try:
        if dry_run:
            stats = runner.dry_run(force=force)
            if json_output:
                print_json(
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
            cancel = runner.layer1(cancel).run_id  # in full when given abbreviated
            cancelled = runner.cancel(cancel)
            if json_output:
                print_json(
                    {
                        "schemaVersion": JSON_SCHEMA_VERSION,
                        "workflow": target.name,
                        "runId": cancel,
                        "cancelled": cancelled,
                    }
                )
            else:
                out.print(plain(f"Cancelled {cancelled} running run(s) of pass {cancel}."))
            return
        run_id = runner.start(force=force) if watch is None else runner.layer1(watch).run_id
        if json_output:
            summary = runner.watch(run_id, timeout=timeout, interval=interval)
            print_json(summary.to_json())
        else:
            verb = "Watching" if watch else "Started"
            err.print(
                Text.assemble(
                    f"{verb} pass ",
                    plain(run_id, "bold"),
                    plain(f" of {target.name} via {runner.qstash.base_url}"),
                )
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


runs_app = typer.Typer(
    cls=ListByDefault,
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
    from lobeflow.run.runner import find_target, list_runs, project_targets

    wanted_state = _state_filter(state)
    if limit < 1:
        raise RunError("--limit must be at least 1.")
    wanted = (
        [find_target(project, app_url, workflow)] if workflow else project_targets(project, app_url)
    )
    qstash = QStashClient(qstash_url, token)
    try:
        rows = list_runs(qstash, wanted, state=wanted_state, limit=limit)
    finally:
        qstash.close()
    if json_output:
        print_json({"schemaVersion": JSON_SCHEMA_VERSION, "runs": [row.to_json() for row in rows]})
        return
    out, _ = consoles()
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
    from lobeflow.run.runner import project_targets, show_run

    check_run_id(run_id, "runs show")  # `runs show ""` used to show the newest run
    try:
        known = project_targets(project, app_url)
    except ProjectError:
        known = []  # outside a project the run is still shown, without its workflow
    qstash = QStashClient(qstash_url, token)
    try:
        row = show_run(qstash, known, run_id)
    finally:
        qstash.close()
    if json_output:
        print_json({"schemaVersion": JSON_SCHEMA_VERSION, **row.to_json(steps=True)})
        return
    out, _ = consoles()
    out.print(run_view(row))
