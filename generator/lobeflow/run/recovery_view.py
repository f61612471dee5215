"""Rich rendering of retries and DLQ entries."""

from __future__ import annotations

import datetime as dt

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from lobeflow.run.dlq import DlqEntry
from lobeflow.run.progress import errors_view, format_duration, outcome_title
from lobeflow.run.recovery import RetrySummary
from lobeflow.terminal import plain

_CALLBACK_STYLE = {"CALLBACK_SUCCESS": "green", "CALLBACK_FAIL": "red"}


def retry_summary_view(summary: RetrySummary) -> RenderableType:
    """The summary of a retry: retried, now processed, still failing, messages."""
    progress = summary.progress
    title = outcome_title(f"Retry ({summary.mode}) of {summary.workflow}", summary.outcome)
    table = Table("", show_header=False)
    table.add_column("", overflow="fold")
    table.add_row("pass", plain(summary.pass_id))
    table.add_row("retried", str(len(summary.reruns)))
    table.add_row("now processed", f"[green]{progress.processed}[/]")
    if progress.skipped:
        table.add_row("skipped", str(progress.skipped))
    table.add_row("still failing", f"[red]{progress.failed}[/]" if progress.failed else "0")
    if progress.canceled:
        table.add_row("cancelled", f"[yellow]{progress.canceled}[/]")
    table.add_row("messages", str(progress.messages))
    table.add_row("duration", format_duration(progress.elapsed_s))
    whole = summary.pass_progress
    if whole is not None:
        total = "?" if whole.statistics is None else str(whole.statistics.to_process)
        table.add_row(
            "pass now",
            f"{whole.processed} processed, {whole.skipped} skipped, {whole.failed} failed "
            f"of {total}",
        )
    return Group(title, table, *errors_view("Still failing:", progress.errors))


def _time(millis: int) -> str:
    return dt.datetime.fromtimestamp(millis / 1000).strftime("%Y-%m-%d %H:%M:%S")


def _clock(millis: int) -> str:
    moment = dt.datetime.fromtimestamp(millis / 1000)
    today = moment.date() == dt.date.today()
    return moment.strftime("%H:%M:%S" if today else "%Y-%m-%d %H:%M")


def _callback(state: str) -> Text:
    return plain(state.removeprefix("CALLBACK_").lower() or "-", _CALLBACK_STYLE.get(state, ""))


def dlq_table(entries: list[DlqEntry], workflows: dict[str, str]) -> Table:
    """DLQ entries: id, when, workflow (or URL), status, failure callback, error.

    Run ids are long: `dlq show ID` and `--json` carry them.
    """
    table = Table("dlq id")
    table.columns[0].no_wrap = True
    table.add_column("created", no_wrap=True)
    table.add_column("workflow / url", overflow="fold")
    table.add_column("status")
    table.add_column("callback")
    table.add_column("error", overflow="fold", ratio=1)
    for entry in entries:
        where = workflows.get(entry.workflow_url or entry.url) or entry.workflow_url or entry.url
        table.add_row(
            plain(entry.dlq_id),
            _clock(entry.created_at),
            plain(where),
            str(entry.response_status or "-"),
            _callback(entry.callback_state),
            plain(entry.error, "red"),
        )
    return table


def dlq_entry_view(entry: DlqEntry) -> RenderableType:
    """One DLQ entry in full."""
    head = Table("", "", show_header=False)
    head.add_column("", overflow="fold")
    head.add_row("message", plain(entry.message_id))
    head.add_row("url", plain(entry.url))
    head.add_row("created", _time(entry.created_at))
    if entry.run_id:
        head.add_row("workflow run", plain(entry.run_id))
        head.add_row("workflow url", plain(entry.workflow_url))
    head.add_row("response status", str(entry.response_status or "-"))
    if entry.callback_state:
        head.add_row("failure callback", _callback(entry.callback_state))
    head.add_row("retries", plain(entry.raw.get("maxRetries", "-")))
    return Group(plain(entry.dlq_id, "bold"), head, plain(f"error: {entry.error}", "red"))
