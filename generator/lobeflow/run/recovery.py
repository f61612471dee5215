"""Recover the failed work of a pass: find its failed runs, resume or restart them, watch.

The library behind `lobeflow retry` and the console's retry buttons. A failed run is
retried through its DLQ entry (`lobeflow.run.dlq`): resumed from its failed step by default
(the steps that succeeded are replayed from the recorded results, not executed again), or
restarted from the start. Either way QStash gives the new run a new id, so the
deduplication window never drops it; the pass accounting (`Runner.pass_runs`) then counts
the new run in place of the failed one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lobeflow.run.client import now_ms
from lobeflow.run.dlq import (
    RESTART,
    RESUME,
    DlqEntry,
    DlqFilter,
    Rerun,
    list_entries,
    retry_entries,
    run_entries,
)
from lobeflow.run.model import (
    COMPLETED,
    COMPLETED_WITH_FAILURES,
    INTERRUPTED,
    JSON_SCHEMA_VERSION,
    LAYERS,
    RUN_CANCELED,
    RUN_FAILED,
    RUN_STARTED,
    TIMED_OUT,
    ItemError,
    Progress,
    RunError,
    RunLog,
    Statistics,
)
from lobeflow.run.runner import MAX_ERRORS, Runner

__all__ = [
    "RESTART",
    "RESUME",
    "FailedRun",
    "RetryPlan",
    "RetrySummary",
    "latest_pass",
    "pass_dlq_filter",
    "plan_retry",
    "retry",
    "watch_reruns",
]


@dataclass(frozen=True)
class FailedRun:
    """A failed run of a pass and its DLQ entry (None when it has none any more)."""

    layer: str
    run: RunLog
    entry: DlqEntry | None

    @property
    def item(self) -> str:
        """What the run works on (an item id, a page...)."""
        return self.run.item()

    @property
    def error(self) -> str:
        """Its last error."""
        return self.run.errors[-1] if self.run.errors else self.run.state


@dataclass(frozen=True)
class RetryPlan:
    """What `retry` would do.

    Attributes:
        pass_id: The pass's Layer-1 run id.
        running: The pass has runs still running (their failures are not in the plan).
        failed: The failed runs to retry, Layers 2 then 3, oldest first.
    """

    pass_id: str
    running: bool
    failed: tuple[FailedRun, ...]

    @property
    def missing(self) -> tuple[FailedRun, ...]:
        """Failed runs without a DLQ entry: they cannot be resumed or restarted."""
        return tuple(failed for failed in self.failed if failed.entry is None)


def latest_pass(runner: Runner) -> str:
    """The run id of the most recent pass of the runner's workflow (`Runner.passes`).

    Raises:
        RunError: The workflow has no pass QStash still knows.
    """
    for run in runner.passes(1):
        return run.run_id
    raise RunError(
        f"No pass of {runner.target.name} found at {runner.target.paths[0]} of "
        f"{', '.join(runner.bases())} (QStash keeps runs for a limited time); start one "
        "with `lobeflow run`."
    )


def pass_dlq_filter(runner: Runner, pass_id: str) -> DlqFilter:
    """Which DLQ entries are a pass's: those of its own runs (`Runner.pass_runs`), at the
    app URL it ran at. `lobeflow dlq list --pass` and the console's "DLQ entries of this
    pass" both list these.

    Raises:
        RunError: Unknown pass, or QStash is unreachable.
    """
    root = runner.layer1(pass_id)
    runs = runner.pass_runs(root)
    base = runner.target.base_of(root.url) or runner.target.base
    return DlqFilter(
        workflow_urls=runner.target.urls_at(base),
        run_ids=frozenset(run.run_id for run in (root, *runs.pages, *runs.items, *runs.replaced)),
    )


def plan_retry(
    runner: Runner, *, pass_id: str | None = None, items: Sequence[str] = ()
) -> RetryPlan:
    """The failed runs of a pass (the latest one by default), with their DLQ entries.

    Args:
        runner: The workflow's runner.
        pass_id: The pass's Layer-1 run id (default: the latest pass).
        items: Only the failed runs working on these items (item ids, or run ids).

    Raises:
        RunError: Unknown pass; an item that did not fail in the pass; the pass's Layer-1
            run itself failed (start a new pass instead).
    """
    root = runner.layer1(pass_id or latest_pass(runner))
    pass_id = root.run_id  # in full when given abbreviated
    if root.state == RUN_FAILED:
        raise RunError(
            f"Pass {pass_id} failed in Layer 1 ({root.errors[-1] if root.errors else 'failed'}): "
            f"no item was started; start a new pass with `lobeflow run {runner.target.name}`."
        )
    runs = runner.pass_runs(root)
    running = not root.ended or any(not run.ended for run in (*runs.pages, *runs.items))
    candidates = [
        *(("paginate", run) for run in runs.pages),
        *(("execute", run) for run in sorted(runs.items, key=lambda run: run.created_at)),
    ]
    failed = [(layer, run) for layer, run in candidates if run.state == RUN_FAILED]
    if items:
        failed = _select_items(pass_id, candidates, failed, items)
    entries = run_entries(
        list_entries(
            runner.qstash,
            DlqFilter(
                workflow_urls=tuple({run.url for _, run in failed}),
                run_ids=frozenset(run.run_id for _, run in failed),
                since=root.created_at,
            ),
        )
        if failed
        else []
    )
    return RetryPlan(
        pass_id,
        running,
        tuple(FailedRun(layer, run, entries.get(run.run_id)) for layer, run in failed),
    )


def _select_items(
    pass_id: str,
    candidates: list[tuple[str, RunLog]],
    failed: list[tuple[str, RunLog]],
    items: Sequence[str],
) -> list[tuple[str, RunLog]]:
    chosen: list[tuple[str, RunLog]] = []
    for wanted in dict.fromkeys(items):
        match = [(layer, run) for layer, run in failed if wanted in (run.item(), run.run_id)]
        if match:
            chosen.extend(match)
            continue
        other = next((run for _, run in candidates if wanted in (run.item(), run.run_id)), None)
        if other is None:
            raise RunError(f"--item {wanted}: no run of pass {pass_id} works on it.")
        raise RunError(
            f"--item {wanted}: its run {other.run_id} did not fail "
            f"({other.state.removeprefix('RUN_').lower()}); nothing to retry."
        )
    return chosen


def retry(runner: Runner, plan: RetryPlan, *, mode: str = RESUME) -> list[Rerun]:
    """Resume (or restart) every failed run of `plan` through its DLQ entry.

    Raises:
        RunError: A failed run has no DLQ entry (deleted, or retried already), nothing is
            retried then; or QStash refused.
    """
    if plan.missing:
        first = plan.missing[0]
        raise RunError(
            f"{len(plan.missing)} failed run(s) of pass {plan.pass_id} have no DLQ entry "
            f"(deleted, or retried already), e.g. {first.run.run_id} ({first.item}); "
            "nothing was retried. Retry the others with --item, or reprocess with "
            f"`lobeflow run {runner.target.name} --force`."
        )
    entries = [failed.entry for failed in plan.failed if failed.entry is not None]
    return retry_entries(runner.qstash, entries, mode=mode)


@dataclass(frozen=True)
class RetrySummary:
    """How the retried runs ended, and the pass as a whole afterwards.

    Attributes:
        workflow: The workflow's name.
        pass_id: The pass's Layer-1 run id.
        mode: `resume` or `restart`.
        outcome: `completed` (all recovered), `completedWithFailures`, `timedOut` or
            `interrupted`.
        progress: The retried runs counted like items of a pass (`statistics.toProcess`
            is how many were retried).
        reruns: What each DLQ entry started.
        pass_progress: The pass with the retried runs in place of the failed ones.
    """

    workflow: str
    pass_id: str
    mode: str
    outcome: str
    progress: Progress
    reruns: tuple[Rerun, ...]
    pass_progress: Progress | None

    def to_json(self) -> dict[str, Any]:
        """The documented `lobeflow retry --json` object."""
        progress = self.progress
        whole = self.pass_progress
        return {
            "schemaVersion": JSON_SCHEMA_VERSION,
            "workflow": self.workflow,
            "passRunId": self.pass_id,
            "mode": self.mode,
            "outcome": self.outcome,
            "retried": len(self.reruns),
            "processed": progress.processed,
            "skipped": progress.skipped,
            "failed": progress.failed,
            "canceled": progress.canceled,
            "messages": progress.messages,
            "durationSeconds": round(progress.elapsed_s, 3),
            "errors": [error.to_json() for error in progress.errors],
            "runs": [rerun.to_json() for rerun in self.reruns],
            "pass": None
            if whole is None
            else {
                "processed": whole.processed,
                "skipped": whole.skipped,
                "failed": whole.failed,
                "canceled": whole.canceled,
                "messages": whole.messages,
                "finished": whole.finished,
            },
        }


def _rerun_progress(
    runner: Runner, plan: RetryPlan, reruns: Sequence[Rerun], started_ms: int
) -> Progress:
    """The retried runs as a progress snapshot (one poll of the logs API per layer)."""
    wanted = {rerun.run_id for rerun in reruns if rerun.run_id}
    layer_of = {failed.run.run_id: failed.layer for failed in plan.failed}
    urls = {failed.run.url for failed in plan.failed}
    since = min([rerun.created_at for rerun in reruns if rerun.created_at] or [started_ms])
    found: dict[str, RunLog] = {}
    for url in urls:
        for log in runner.qstash.runs(url=url, from_date=since):
            if log.run_id in wanted:
                found[log.run_id] = log
    counts = dict.fromkeys((RUN_STARTED, "processed", "skipped", RUN_FAILED, RUN_CANCELED), 0)
    errors: list[ItemError] = []
    for rerun in reruns:
        run = found.get(rerun.run_id)
        if run is None or not run.ended:
            counts[RUN_STARTED] += 1
        elif run.state == RUN_FAILED:
            counts[RUN_FAILED] += 1
            layer = layer_of.get(rerun.previous_run_id, LAYERS[2])
            errors.append(
                ItemError(run.run_id, layer, run.item(), run.errors[-1] if run.errors else "")
            )
        elif run.state == RUN_CANCELED:
            counts[RUN_CANCELED] += 1
        else:
            counts["skipped" if run.skipped else "processed"] += 1
    total = len(reruns)
    finished = counts[RUN_STARTED] == 0
    ended = [run.completed_at or 0 for run in found.values()]
    end = max(ended) if finished and ended else now_ms()
    return Progress(
        run_id=plan.pass_id,
        statistics=Statistics(total, total, 0),
        started=len(found),
        processed=counts["processed"],
        skipped=counts["skipped"],
        failed=counts[RUN_FAILED],
        canceled=counts[RUN_CANCELED],
        retrying=sum(run.retrying for run in found.values()),
        messages=sum(run.messages for run in found.values()),
        elapsed_s=max(0, end - since) / 1000,
        finished=finished,
        errors=tuple(errors[:MAX_ERRORS]),
    )


def watch_reruns(
    runner: Runner,
    plan: RetryPlan,
    reruns: Sequence[Rerun],
    *,
    mode: str = RESUME,
    on_progress: Callable[[Progress], None] | None = None,
    timeout: float = 3600.0,
    interval: float = 0.5,
) -> RetrySummary:
    """Poll the retried runs until each has ended, `timeout` passes, or Ctrl-C.

    A retried Layer-2 run starts item runs of its own: those are then watched as part of
    the pass (`Runner.watch`) before the summary is made.

    Raises:
        RunError: QStash is unreachable.
    """
    started_ms = now_ms()
    deadline = time.monotonic() + timeout
    progress = _rerun_progress(runner, plan, reruns, started_ms)
    outcome = TIMED_OUT
    try:
        while True:
            if on_progress is not None:
                on_progress(progress)
            if progress.finished:
                outcome = COMPLETED_WITH_FAILURES if progress.failed else COMPLETED
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(interval)
            progress = _rerun_progress(runner, plan, reruns, started_ms)
        pass_progress: Progress | None = None
        if any(failed.layer != "execute" for failed in plan.failed) and outcome == COMPLETED:
            left = max(1.0, deadline - time.monotonic())
            whole = runner.watch(plan.pass_id, timeout=left, interval=interval)
            pass_progress = whole.progress
            if whole.outcome != COMPLETED:
                outcome = whole.outcome
        else:
            pass_progress = runner.progress(plan.pass_id)
    except KeyboardInterrupt:
        outcome, pass_progress = INTERRUPTED, None
    return RetrySummary(
        runner.target.name, plan.pass_id, mode, outcome, progress, tuple(reruns), pass_progress
    )
