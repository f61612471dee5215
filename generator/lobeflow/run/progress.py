"""Rich rendering of passes and runs: statistics, the live progress bar, summaries, tables."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from types import TracebackType

from rich import box
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.progress import BarColumn, SpinnerColumn, TaskID, TextColumn
from rich.progress import Progress as RichProgress
from rich.table import Table
from rich.text import Text

from lobeflow.run.model import (
    COMPLETED,
    INTERRUPTED,
    RUN_FAILED,
    RUN_SUCCESS,
    TIMED_OUT,
    ItemError,
    Progress,
    Statistics,
    Summary,
)
from lobeflow.run.runner import RunRow
from lobeflow.terminal import plain, printable

# Errors listed under a summary; `--json` carries more.
SHOWN_ERRORS = 5
_STATE_STYLE = {RUN_SUCCESS: "green", RUN_FAILED: "red", "RUN_CANCELED": "yellow"}
_LAYER_NUMBER = {"process": "1", "paginate": "2", "execute": "3"}
# Characters of a run id the runs table shows (the end: uuid, hash or item id).
SHORT_RUN_ID = 12


def format_duration(seconds: float | None) -> str:
    """`850ms`, `12.3s`, `4m05s`, `1h02m`; `-` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def statistics_table(workflow: str, stats: Statistics, *, force: bool) -> RenderableType:
    """The dry-run statistics of `workflow`."""
    title = Text.assemble(plain(f"Dry run of {workflow}", "bold"), " (--force)" if force else "")
    table = Table("", "items", show_header=False)
    table.add_row("total eligible", str(stats.total_eligible))
    table.add_row("to process", f"[bold]{stats.to_process}[/]")
    table.add_row("already processed", str(stats.already_processed))
    return Group(title, table)


class ProgressView:
    """A live progress bar of one pass: items done / to process, rate, failures, elapsed."""

    def __init__(self, console: Console, workflow: str) -> None:
        """Draw on `console` (nothing is drawn until entered)."""
        self._bar = RichProgress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[count]}"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[failed]}"),
            TextColumn("{task.fields[elapsed]}"),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None
        # The description column reads markup.
        self._workflow = escape(printable(workflow))

    def __enter__(self) -> ProgressView:
        """Start drawing."""
        self._bar.start()
        self._task = self._bar.add_task(
            self._workflow, total=None, count="", rate="", failed="", elapsed=""
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop drawing; the last frame stays on screen."""
        self._bar.stop()

    def update(self, progress: Progress) -> None:
        """Redraw from a snapshot."""
        assert self._task is not None
        total = None if progress.statistics is None else progress.statistics.to_process
        failed = f"[red]{progress.failed} failed[/]" if progress.failed else "0 failed"
        if progress.retrying:
            failed += f" [yellow]{progress.retrying} retrying[/]"
        self._bar.update(
            self._task,
            total=total,
            completed=progress.done,
            count=f"{progress.done}/{'?' if total is None else total} items",
            rate=f"{progress.rate:.1f}/s",
            failed=failed,
            elapsed=format_duration(progress.elapsed_s),
        )


def outcome_color(outcome: str) -> str:
    """The colour of a pass's (or a retry's) outcome in its summary title."""
    if outcome in (INTERRUPTED, TIMED_OUT):
        return "yellow"
    return "green" if outcome == COMPLETED else "red"


def outcome_title(what: str, outcome: str) -> Text:
    """`what: outcome` in bold, the outcome in its colour."""
    return Text.assemble(
        plain(f"{what}: ", "bold"), plain(outcome, f"bold {outcome_color(outcome)}")
    )


def summary_view(summary: Summary) -> RenderableType:
    """The summary of a pass: counts, messages, duration and the first errors."""
    progress = summary.progress
    title = outcome_title(f"Pass of {summary.workflow}", summary.outcome)
    table = Table("", show_header=False)
    table.add_column("", overflow="fold")
    # The end of the id, as `lobeflow runs` shows it (every command takes it); `--json` and
    # the "Started pass" line give it in full.
    table.add_row("run id", plain(short_run_id(progress.run_id)))
    if progress.statistics is not None:
        table.add_row("to process", str(progress.statistics.to_process))
    table.add_row("processed", f"[green]{progress.processed}[/]")
    table.add_row("skipped", str(progress.skipped))
    table.add_row("failed", f"[red]{progress.failed}[/]" if progress.failed else "0")
    if progress.canceled:
        table.add_row("cancelled", f"[yellow]{progress.canceled}[/]")
    table.add_row("messages", str(progress.messages))
    table.add_row("duration", format_duration(progress.elapsed_s))
    return Group(title, table, *errors_view("First errors:", progress.errors))


def errors_view(heading: str, errors: Sequence[ItemError]) -> list[RenderableType]:
    """The first failed items of a pass (or a retry) under a heading; nothing if none."""
    if not errors:
        return []
    table = Table("layer", "item", "run")
    table.add_column("error", overflow="fold")
    for error in errors[:SHOWN_ERRORS]:
        run = short_run_id(error.run_id)
        table.add_row(plain(error.layer), plain(error.item), plain(run), plain(error.error, "red"))
    return [heading, table]


def interrupted_hint(workflow: str, run_id: str) -> Text:
    """What to do after Ctrl-C: the pass goes on."""
    workflow, run_id = printable(workflow), printable(run_id)
    return Text(
        f"Stopped watching; the pass goes on.\n"
        f"  watch again: lobeflow run {workflow} --watch {run_id}\n"
        f"  cancel it:   lobeflow run {workflow} --cancel {run_id}"
    )


def _time(millis: int) -> str:
    return dt.datetime.fromtimestamp(millis / 1000).strftime("%Y-%m-%d %H:%M:%S")


def _clock(millis: int) -> str:
    return dt.datetime.fromtimestamp(millis / 1000).strftime("%H:%M:%S")


def _state(state: str) -> Text:
    return plain(state.removeprefix("RUN_"), _STATE_STYLE.get(state, "cyan"))


def short_run_id(run_id: str) -> str:
    """The end of a run id, which tells runs apart (`runs show` takes it, or any prefix)."""
    return run_id[-SHORT_RUN_ID:]


def runs_table(rows: list[RunRow], *, width: int | None = None) -> Table:
    """Recent runs: start, run id, layer, item, state, steps, duration, last error.

    The workflow column appears only when the rows span several workflows. Given a
    `width` (the terminal's), run ids are shortened and the workflow, item and error cut
    so that no line is longer; without one, everything is shown in full.
    """
    several = len({row.workflow for row in rows}) > 1
    with_errors = any(row.run.errors for row in rows)
    columns: list[tuple[str, list[Text], bool]] = []  # header, cells, cut to fit

    def column(header: str, cells: list[Text], *, cut: bool = False) -> None:
        columns.append((header, cells, cut))

    runs = [row.run for row in rows]
    column("started", [Text(_clock(run.created_at)) for run in runs])
    shorten = width is not None
    column("run", [plain(short_run_id(r.run_id) if shorten else r.run_id) for r in runs])
    if several:
        column("workflow", [plain(row.workflow or "-") for row in rows], cut=True)
    column("L", [Text(_LAYER_NUMBER.get(row.layer, "-")) for row in rows])
    column("item", [plain(run.item() or "-") for run in runs], cut=True)
    column("state", [_state(run.state) for run in runs])
    column("steps", [Text(str(len(run.work_steps))) for run in runs])
    column("took", [Text(format_duration(_seconds(run.duration_ms))) for run in runs])
    if with_errors:
        errors = [plain(run.errors[-1] if run.errors else "", "red") for run in runs]
        column("error", errors, cut=True)

    natural = [max(len(header), *(cell.cell_len for cell in cells)) for header, cells, _ in columns]
    widths: list[int | None] = [None] * len(columns)
    if width is not None:
        cut = [i for i, (_, _, to_cut) in enumerate(columns) if to_cut]
        fixed = sum(natural[i] for i in range(len(columns)) if i not in cut)
        # Water-filling: the narrowest cut columns get all they need, the rest share.
        room = max(width - fixed - (len(columns) - 1), 4 * len(cut))
        for position, i in enumerate(sorted(cut, key=natural.__getitem__)):
            share = min(natural[i], room // (len(cut) - position))
            widths[i] = share
            room -= share
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=0)
    for (header, _, to_cut), limit in zip(columns, widths, strict=True):
        table.add_column(
            header,
            no_wrap=True,
            overflow="ellipsis" if to_cut else "fold",
            max_width=limit,
        )
    for index in range(len(rows)):
        table.add_row(*(cells[index] for _, cells, _ in columns))
    return table


def _seconds(millis: int | None) -> float | None:
    return None if millis is None else millis / 1000


def run_view(row: RunRow) -> RenderableType:
    """One run and its steps."""
    run = row.run
    duration = None if run.duration_ms is None else run.duration_ms / 1000
    head = Table("", "", show_header=False)
    if row.workflow:
        layer = f"{row.workflow} (layer {_LAYER_NUMBER[row.layer]}, {row.layer})"
        head.add_row("workflow", plain(layer))
    head.add_row("url", plain(run.url))
    head.add_row("state", _state(run.state))
    head.add_row("item", plain(run.item() or "-"))
    head.add_row("created", _time(run.created_at))
    head.add_row("duration", format_duration(duration))
    steps = Table("#")
    steps.add_column("step", overflow="fold")
    steps.add_column("type")
    steps.add_column("at")
    steps.add_column("output", overflow="fold")
    for step in run.steps:
        out = step.out if len(step.out) <= 200 else step.out[:200] + "..."
        steps.add_row(
            str(step.step_id),
            plain(step.name),
            plain(step.step_type),
            _clock(step.created_at),
            plain(out),
        )
    parts: list[RenderableType] = [plain(run.run_id, "bold"), head, steps]
    for error in run.errors:
        parts.append(plain(f"error: {error}", "red"))
    return Group(*parts)
