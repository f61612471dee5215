"""`lobeflow schedules [list|sync|pause|resume|delete]`: the thin CLI skin over
`lobeflow.run.schedules`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from lobeflow_runtime.protocol import DEV_TOKEN

from lobeflow.commands.options import (
    DEFAULT_APP_URL,
    DEFAULT_QSTASH_URL,
    AppUrlOpt,
    JsonOpt,
    ListByDefault,
    ProjectOpt,
    QStashUrlOpt,
    TokenOpt,
    WorkflowArg,
    consoles,
    print_json,
)
from lobeflow.project import find_project_root
from lobeflow.run.model import JSON_SCHEMA_VERSION
from lobeflow.terminal import plain

if TYPE_CHECKING:
    from lobeflow.run.client import QStashClient
    from lobeflow.run.runner import Runner
    from lobeflow.run.schedules import Change, RunnerFor, ScheduleRow, SyncPlan

schedules_app = typer.Typer(
    cls=ListByDefault,
    help="The project's schedules in QStash: list, sync, pause, resume, delete.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


@contextmanager
def _qstash(qstash_url: str, token: str) -> Iterator[QStashClient]:
    from lobeflow.run.client import QStashClient

    client = QStashClient(qstash_url, token)
    try:
        yield client
    finally:
        client.close()


def runners_for(qstash: QStashClient, root: Path, app_url: str) -> RunnerFor:
    """Runners of the project's workflows that share `qstash` (closed after use)."""
    from lobeflow.project import list_workflows
    from lobeflow.run.client import AppClient
    from lobeflow.run.runner import Runner, WorkflowTarget, find_workflow

    infos = list_workflows(root)

    @contextmanager
    def runner_for(workflow: str) -> Iterator[Runner]:
        target = WorkflowTarget.from_workflow(find_workflow(infos, workflow), app_url)
        runner = Runner(target, qstash, AppClient(app_url))
        try:
            yield runner
        finally:
            runner.app.close()  # the QStash client is the caller's

    return runner_for


@schedules_app.command("list")
def list_command(
    *,
    json_output: JsonOpt = False,
    project: ProjectOpt = Path("."),
    app_url: AppUrlOpt = DEFAULT_APP_URL,
    qstash_url: QStashUrlOpt = DEFAULT_QSTASH_URL,
    token: TokenOpt = DEV_TOKEN,
) -> None:
    """Each workflow's schedule: cron, state, next fire time (local and UTC), last pass."""
    from lobeflow.run.schedules import schedule_rows

    root = find_project_root(project)
    with _qstash(qstash_url, token) as qstash:
        rows = schedule_rows(
            qstash, root, app_url, os.environ, runner_for=runners_for(qstash, root, app_url)
        )
    if json_output:
        print_json(
            {"schemaVersion": JSON_SCHEMA_VERSION, "schedules": [row.to_json() for row in rows]}
        )
        return
    out, _ = consoles()
    if not rows:
        out.print("No workflows.")
        return
    out.print(schedules_table(rows))


def schedules_table(rows: list[ScheduleRow]) -> Any:
    """The table `lobeflow schedules list` prints (fits 80 columns): per workflow its cron
    with its state, the next fire time in local time and UTC, and the last pass it started."""
    from rich.table import Table
    from rich.text import Text

    from lobeflow.run.schedules import SYNCED, local_time, utc_time

    table = Table("workflow", "cron", "next fire", "last pass", box=None, pad_edge=False)
    for row in rows:
        live = row.live
        cron = plain(live.cron if live is not None else row.declared or "-")
        if live is not None:
            cron.append("\npaused" if live.paused else "\nactive")
        if row.status != SYNCED:
            cron.append(f"\n{row.status}", style="yellow")
            if row.declared and live is not None and live.cron != row.declared:
                cron.append_text(plain(f": {row.declared}", "yellow"))
        fire = row.next_fire()
        when = Text("-") if fire is None else Text(f"{local_time(fire)}\n{utc_time(fire)}")
        last = Text("-")
        if row.last_pass is not None:
            run, progress = row.last_pass.run, row.last_pass.progress
            last = plain(run.run_id[-12:])
            last.append(f"\n{local_time(run.created_at)}")
            if progress is not None:
                state = "done" if progress.finished else "running"
                last.append(f"\n{state}: {progress.processed} processed")
                if progress.failed:
                    last.append(f", {progress.failed} failed", style="red")
        table.add_row(plain(row.workflow), cron, when, last)
    return table


def change_line(change: Change) -> Any:
    """One line (two for a new destination) of a sync plan."""
    from rich.text import Text

    from lobeflow.run.schedules import NO_WORKFLOW

    styles = {"create": "green", "update": "magenta", "delete": "yellow", "unchanged": "cyan"}
    line = Text(f"{change.action:>9} ", style=styles.get(change.action, ""))
    line.append_text(plain(change.workflow))
    desired, live = change.desired, change.live
    if desired is not None and live is not None and "cron" in change.differences:
        line.append_text(plain(f"  {live.cron!r} -> {desired.cron!r}"))
    elif desired is not None:
        line.append_text(plain(f"  {desired.cron!r}"))
    elif live is not None:
        why = change.source if change.source == NO_WORKFLOW else f"{change.source} declares none"
        line.append_text(plain(f"  {live.cron!r} ({why})"))
    others = [name for name in change.differences if name != "cron"]
    if others:
        line.append_text(plain(f" ({', '.join(others)})"))
    if desired is not None and (live is None or "destination" in change.differences):
        line.append_text(plain(f"\n          -> {desired.destination}"))
    return line


_DONE = {"create": "created", "update": "updated", "delete": "deleted", "unchanged": "unchanged"}
_TO_DO = {"create": "to create", "update": "to update", "delete": "to delete"}


def print_plan(plan: SyncPlan, root: Path, *, dry_run: bool) -> None:
    """The plan, what is left alone, and the counts, on stderr."""
    from lobeflow.run.schedules import foreign_to_project_routes, workflow_paths

    _, err = consoles()
    for change in plan.changes:
        err.print(change_line(change))
    if plan.foreign:
        others = foreign_to_project_routes(plan, workflow_paths(root))
        note = f"left alone: {len(plan.foreign)} schedule(s) lobeflow did not make for this project"
        if others:
            note += "; of them, these call the project's routes: " + ", ".join(
                f"{schedule.schedule_id} ({schedule.cron})" for schedule in others
            )
        err.print(plain(note))
    counts = dict.fromkeys(_DONE, 0)
    for change in plan.changes:
        counts[change.action] += 1
    if dry_run:
        todo = ", ".join(f"{counts[action]} {words}" for action, words in _TO_DO.items())
        err.print(plain(f"Dry run: {todo}; nothing written."))
    else:
        done = ", ".join(f"{counts[action]} {words}" for action, words in _DONE.items())
        err.print(plain(f"Schedules of {plan.project}: {done}."))


@schedules_app.command("sync")
def sync_command(
    *,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; change nothing in QStash.")
    ] = False,
    json_output: JsonOpt = False,
    project: ProjectOpt = Path("."),
    app_url: AppUrlOpt = DEFAULT_APP_URL,
    qstash_url: QStashUrlOpt = DEFAULT_QSTASH_URL,
    token: TokenOpt = DEV_TOKEN,
) -> None:
    """Make QStash's schedules match each workflow's SCHEDULE: only what differs, only lobeflow's."""
    from lobeflow.run.schedules import sync

    root = find_project_root(project)
    with _qstash(qstash_url, token) as qstash:
        plan = sync(qstash, root, app_url, os.environ, dry_run=dry_run)
    if json_output:
        print_json(
            {
                "schemaVersion": JSON_SCHEMA_VERSION,
                "project": plan.project,
                "dryRun": dry_run,
                "changes": [change.to_json() for change in plan.changes],
                "leftAlone": [schedule.schedule_id for schedule in plan.foreign],
            }
        )
        return
    print_plan(plan, root, dry_run=dry_run)


def _one(
    action: str,
    workflow: str,
    project: Path,
    qstash_url: str,
    token: str,
    json_output: bool,
) -> None:
    from lobeflow.run import schedules

    root = find_project_root(project)
    with _qstash(qstash_url, token) as qstash:
        if action == "delete":
            schedule = schedules.delete(qstash, root, workflow)
        else:
            schedule = schedules.set_paused(qstash, root, workflow, paused=action == "pause")
    done = {"pause": "paused", "resume": "resumed", "delete": "deleted"}[action]
    if json_output:
        print_json(
            {
                "schemaVersion": JSON_SCHEMA_VERSION,
                "scheduleId": schedule.schedule_id,
                "action": action,
            }
        )
        return
    _, err = consoles()
    message = f"{done} {schedule.schedule_id} ({schedule.cron})."
    if action == "delete":
        message += " The next `lobeflow schedules sync` creates it again while SCHEDULE is set."
    err.print(plain(message[0].upper() + message[1:]))


@schedules_app.command("pause")
def pause_command(
    workflow: WorkflowArg,
    *,
    json_output: JsonOpt = False,
    project: ProjectOpt = Path("."),
    qstash_url: QStashUrlOpt = DEFAULT_QSTASH_URL,
    token: TokenOpt = DEV_TOKEN,
) -> None:
    """Pause the workflow's schedule: it stops firing (sync keeps it paused)."""
    _one("pause", workflow, project, qstash_url, token, json_output)


@schedules_app.command("resume")
def resume_command(
    workflow: WorkflowArg,
    *,
    json_output: JsonOpt = False,
    project: ProjectOpt = Path("."),
    qstash_url: QStashUrlOpt = DEFAULT_QSTASH_URL,
    token: TokenOpt = DEV_TOKEN,
) -> None:
    """Resume the workflow's paused schedule."""
    _one("resume", workflow, project, qstash_url, token, json_output)


@schedules_app.command("delete")
def delete_command(
    workflow: WorkflowArg,
    *,
    json_output: JsonOpt = False,
    project: ProjectOpt = Path("."),
    qstash_url: QStashUrlOpt = DEFAULT_QSTASH_URL,
    token: TokenOpt = DEV_TOKEN,
) -> None:
    """Delete the workflow's schedule from QStash (set SCHEDULE = None to keep it away)."""
    _one("delete", workflow, project, qstash_url, token, json_output)
