"""`lobeflow retry` and `lobeflow dlq`: the thin CLI skin over `run.recovery` and `run.dlq`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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
    RestartOpt,
    TimeoutOpt,
    TokenOpt,
    WorkflowArg,
    check_watch_times,
    consoles,
    print_json,
)
from lobeflow.project import ProjectError
from lobeflow.run.ids import check_dlq_ids, check_run_id
from lobeflow.run.model import COMPLETED, INTERRUPTED, JSON_SCHEMA_VERSION, RunError
from lobeflow.terminal import plain

if TYPE_CHECKING:
    from lobeflow.run.client import QStashClient
    from lobeflow.run.dlq import DlqEntry, DlqFilter


def retry(
    workflow: WorkflowArg,
    *,
    pass_id: Annotated[
        str | None,
        typer.Option("--pass", metavar="RUN_ID", help="The pass (default: the latest)."),
    ] = None,
    item: Annotated[
        list[str] | None,
        typer.Option(
            "--item", metavar="ID", help="Only the failed run of this item (or run id); repeat."
        ),
    ] = None,
    restart: RestartOpt = False,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
    interval: IntervalOpt = DEFAULT_INTERVAL_S,
    project: ProjectOpt = Path("."),
    app_url: AppUrlOpt = DEFAULT_APP_URL,
    qstash_url: QStashUrlOpt = DEFAULT_QSTASH_URL,
    token: TokenOpt = DEV_TOKEN,
) -> None:
    """Retry the failed runs of a pass: resumed from their failed step, watched to the end."""
    from rich.text import Text

    from lobeflow.run.client import AppClient, QStashClient
    from lobeflow.run.progress import ProgressView
    from lobeflow.run.recovery import RESTART, RESUME, plan_retry, watch_reruns
    from lobeflow.run.recovery import retry as start_retry
    from lobeflow.run.recovery_view import retry_summary_view
    from lobeflow.run.runner import Runner, find_target

    if pass_id is not None:
        check_run_id(pass_id, "--pass")
    check_watch_times(timeout, interval)
    target = find_target(project, app_url, workflow)
    runner = Runner(target, QStashClient(qstash_url, token), AppClient(app_url))
    mode = RESTART if restart else RESUME
    out, err = consoles()
    try:
        runner.qstash.check()
        plan = plan_retry(runner, pass_id=pass_id, items=item or ())
        if not plan.failed:
            if json_output:
                print_json(
                    {
                        "schemaVersion": JSON_SCHEMA_VERSION,
                        "workflow": target.name,
                        "passRunId": plan.pass_id,
                        "mode": mode,
                        "outcome": COMPLETED,
                        "retried": 0,
                        "running": plan.running,
                    }
                )
            else:
                still = " (it is still running)" if plan.running else ""
                out.print(
                    plain(f"Nothing to retry: pass {plan.pass_id} has no failed runs{still}.")
                )
            return
        reruns = start_retry(runner, plan, mode=mode)
        if json_output:
            summary = watch_reruns(
                runner, plan, reruns, mode=mode, timeout=timeout, interval=interval
            )
            print_json({**summary.to_json(), "running": plan.running})
        else:
            verb = "Restarted" if restart else "Resumed"
            err.print(
                Text.assemble(
                    f"{verb} {len(reruns)} failed run(s) of pass ",
                    plain(plan.pass_id, "bold"),
                    plain(f" of {target.name} via {runner.qstash.base_url}"),
                )
            )
            if plan.running:
                err.print(
                    "[yellow]The pass is still running: runs that fail from now on are not "
                    "part of this retry.[/]"
                )
            with ProgressView(err, f"retry {target.name}") as view:
                summary = watch_reruns(
                    runner,
                    plan,
                    reruns,
                    mode=mode,
                    on_progress=view.update,
                    timeout=timeout,
                    interval=interval,
                )
            out.print(retry_summary_view(summary))
        if summary.outcome == INTERRUPTED:
            err.print(
                plain(
                    f"Stopped watching; the retried runs go on (`lobeflow run {target.name} "
                    f"--watch {plan.pass_id}`)."
                )
            )
            raise typer.Exit(EXIT_INTERRUPTED)
        if summary.outcome != COMPLETED:
            raise typer.Exit(1)
    finally:
        runner.close()


dlq_app = typer.Typer(
    cls=ListByDefault,
    help="The dead-letter queue: `dlq [list]`, `dlq show ID`, `dlq retry ID...`, "
    "`dlq delete ID...`.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _filter(
    project: Path,
    app_url: str,
    qstash: QStashClient,
    *,
    workflow: str | None,
    pass_id: str | None,
    error: str | None,
    since: str | None,
) -> DlqFilter:
    from dataclasses import replace

    from lobeflow.run.client import AppClient
    from lobeflow.run.dlq import DlqFilter, parse_since
    from lobeflow.run.recovery import pass_dlq_filter
    from lobeflow.run.runner import Runner, find_target

    where = DlqFilter()
    if workflow or pass_id:
        if not workflow:
            raise RunError("--pass needs the workflow: `lobeflow dlq list --workflow NAME`.")
        target = find_target(project, app_url, workflow)
        if pass_id:
            app = AppClient(app_url)  # unused: the pass is found through QStash alone
            try:
                where = pass_dlq_filter(Runner(target, qstash, app), pass_id)
            finally:
                app.close()
        else:
            where = DlqFilter(workflow_paths=target.paths)
    return replace(where, error=error or "", since=None if since is None else parse_since(since))


@dlq_app.command("list")
def list_command(
    *,
    workflow: Annotated[
        str | None, typer.Option("--workflow", "-w", help="Only entries of this workflow.")
    ] = None,
    pass_id: Annotated[
        str | None,
        typer.Option("--pass", metavar="RUN_ID", help="Only entries of this pass's runs."),
    ] = None,
    error: Annotated[
        str | None, typer.Option(help="Only entries whose error contains this text.")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only entries since: 30m, 2h, 1d, or an ISO time.")
    ] = None,
    limit: Annotated[int, typer.Option(help="How many entries, newest first.")] = 50,
    json_output: JsonOpt = False,
    project: ProjectOpt = Path("."),
    app_url: AppUrlOpt = DEFAULT_APP_URL,
    qstash_url: QStashUrlOpt = DEFAULT_QSTASH_URL,
    token: TokenOpt = DEV_TOKEN,
) -> None:
    """DLQ entries: id, when, workflow or URL, status, failure-callback state, error."""
    from lobeflow.run.client import QStashClient
    from lobeflow.run.dlq import list_entries
    from lobeflow.run.recovery_view import dlq_table

    if pass_id is not None:
        check_run_id(pass_id, "--pass")
    if limit < 1:
        raise RunError("--limit must be at least 1.")
    qstash = QStashClient(qstash_url, token)
    try:
        where = _filter(
            project,
            app_url,
            qstash,
            workflow=workflow,
            pass_id=pass_id,
            error=error,
            since=since,
        )
        entries = list_entries(qstash, where)
    finally:
        qstash.close()
    shown = entries[:limit]
    if json_output:
        print_json(
            {
                "schemaVersion": JSON_SCHEMA_VERSION,
                "total": len(entries),
                "entries": [entry.to_json() for entry in shown],
            }
        )
        return
    out, _ = consoles()
    if not shown:
        out.print("The DLQ has no matching entries.")
        return
    out.print(dlq_table(shown, _workflow_names(project, app_url, shown)))
    if len(entries) > len(shown):
        out.print(f"{len(shown)} of {len(entries)} entries shown (--limit).")


def _workflow_names(project: Path, app_url: str, entries: list[DlqEntry]) -> dict[str, str]:
    """URL -> workflow name for the entries of the project's workflows (at any app URL)."""
    from lobeflow.run.runner import project_targets, workflow_of

    try:
        targets = project_targets(project, app_url)
    except ProjectError:
        return {}
    names: dict[str, str] = {}
    for entry in entries:
        url = entry.workflow_url or entry.url
        name, _ = workflow_of(targets, url)
        if name:
            names[url] = name
    return names


@dlq_app.command("show")
def show_command(
    dlq_id: Annotated[str, typer.Argument(help="The DLQ entry id.")],
    *,
    json_output: JsonOpt = False,
    qstash_url: QStashUrlOpt = DEFAULT_QSTASH_URL,
    token: TokenOpt = DEV_TOKEN,
) -> None:
    """One DLQ entry: the message, its last answer and failure-callback state."""
    from lobeflow.run.client import QStashClient
    from lobeflow.run.dlq import get_entry
    from lobeflow.run.recovery_view import dlq_entry_view

    check_dlq_ids([dlq_id], "dlq show")
    qstash = QStashClient(qstash_url, token)
    try:
        entry = get_entry(qstash, dlq_id)
    finally:
        qstash.close()
    if json_output:
        print_json({"schemaVersion": JSON_SCHEMA_VERSION, **entry.to_json(), "raw": entry.raw})
        return
    out, _ = consoles()
    out.print(dlq_entry_view(entry))


IdsArg = Annotated[list[str], typer.Argument(help="DLQ entry ids.", show_default=False)]


@dlq_app.command("retry")
def retry_command(
    dlq_ids: IdsArg,
    *,
    restart: RestartOpt = False,
    json_output: JsonOpt = False,
    qstash_url: QStashUrlOpt = DEFAULT_QSTASH_URL,
    token: TokenOpt = DEV_TOKEN,
) -> None:
    """Retry entries: workflow runs resumed from their failed step, messages re-published."""
    from lobeflow.run.client import QStashClient
    from lobeflow.run.dlq import RESTART, RESUME, get_entries, retry_entries

    check_dlq_ids(dlq_ids, "dlq retry")
    qstash = QStashClient(qstash_url, token)
    try:
        entries = get_entries(qstash, dlq_ids)
        reruns = retry_entries(qstash, entries, mode=RESTART if restart else RESUME)
    finally:
        qstash.close()
    if json_output:
        print_json(
            {"schemaVersion": JSON_SCHEMA_VERSION, "runs": [rerun.to_json() for rerun in reruns]}
        )
        return
    out, _ = consoles()
    verb = "restarted" if restart else "resumed"
    for rerun in reruns:
        if rerun.run_id:
            out.print(
                plain(f"{rerun.dlq_id}: run {rerun.previous_run_id} {verb} as {rerun.run_id}"),
                soft_wrap=True,
            )
        else:
            out.print(
                plain(f"{rerun.dlq_id}: published again as message {rerun.message_id}"),
                soft_wrap=True,
            )


@dlq_app.command("delete")
def delete_command(
    dlq_ids: IdsArg,
    *,
    json_output: JsonOpt = False,
    qstash_url: QStashUrlOpt = DEFAULT_QSTASH_URL,
    token: TokenOpt = DEV_TOKEN,
) -> None:
    """Delete entries (their runs stay failed; nothing is retried)."""
    from lobeflow.run.client import QStashClient
    from lobeflow.run.dlq import delete_entries, get_entries

    check_dlq_ids(dlq_ids, "dlq delete")
    qstash = QStashClient(qstash_url, token)
    try:
        deleted = delete_entries(qstash, get_entries(qstash, dlq_ids))
    finally:
        qstash.close()
    if json_output:
        print_json({"schemaVersion": JSON_SCHEMA_VERSION, "deleted": deleted})
        return
    out, _ = consoles()
    out.print(f"Deleted {deleted} DLQ entr{'y' if deleted == 1 else 'ies'}.")
