"""What a pass is made of: statistics, run logs, progress snapshots and the final summary.

Every `to_json()` here is part of the documented `--json` output (docs/run.md): keys are
camelCase, like the QStash API and the generated payloads, and are never renamed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from lobeflow_runtime import protocol
from lobeflow_runtime.protocol import DRY_RUN, FORCE, STATISTICS

from lobeflow.errors import LobeflowError

JSON_SCHEMA_VERSION = 1

RUN_STARTED = "RUN_STARTED"
RUN_SUCCESS = "RUN_SUCCESS"
RUN_FAILED = "RUN_FAILED"
RUN_CANCELED = "RUN_CANCELED"
RUN_STATES = (RUN_STARTED, RUN_SUCCESS, RUN_FAILED, RUN_CANCELED)

# The three layers, named as in the answers files (`process_*`, `paginate_*`, `execute_*`).
LAYERS = protocol.LAYERS
# In the run id of a pass a schedule started, `wfr_<workflow>-process-scheduled-<message>`
# (`lobeflow_runtime.schedules` names it so).
SCHEDULED_MARKER = f"-{LAYERS[0]}-{protocol.SCHEDULED_RUN}-"


class RunError(LobeflowError):
    """A pass cannot be started or watched: nothing reachable, unknown workflow or run..."""


@dataclass(frozen=True)
class Statistics:
    """What Layer 1 counts: eligible items, those still to process, those already done."""

    total_eligible: int
    to_process: int
    already_processed: int

    @classmethod
    def from_json(cls, data: Any) -> Statistics | None:
        """Read the wire form (`totalEligible`...); None if `data` is not one."""
        if not isinstance(data, dict):
            return None
        counts = [
            value
            for value in (data.get(key) for key in STATISTICS)
            if isinstance(value, int) and not isinstance(value, bool)
        ]
        return cls(*counts) if len(counts) == 3 else None

    def to_json(self) -> dict[str, int]:
        """The wire form."""
        return {
            "totalEligible": self.total_eligible,
            "toProcess": self.to_process,
            "alreadyProcessed": self.already_processed,
        }


@dataclass(frozen=True)
class StepLog:
    """One recorded step of a run (`init` is the run-start payload)."""

    step_id: int
    name: str
    step_type: str
    state: str
    out: str
    created_at: int

    def to_json(self) -> dict[str, Any]:
        """The documented JSON form."""
        return {
            "stepId": self.step_id,
            "name": self.name,
            "type": self.step_type,
            "state": self.state,
            "createdAt": self.created_at,
            "out": self.out,
        }


@dataclass(frozen=True)
class NextStep:
    """A delivery of a run not done yet: in progress, waiting to retry, failed for good, or
    stopped by a cancel (`STEP_PROGRESS`, `STEP_RETRY`, `STEP_FAILED`, `STEP_CANCELED`).

    `retries` is what the message was allowed (QStash's `retries`), `attempts` how many of
    its deliveries failed so far, `error` why the last one did.
    """

    name: str
    state: str
    retries: int
    error: str
    time: int
    attempts: int = 0
    next_delivery: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON form (the console's step timeline)."""
        return {
            "name": self.name,
            "state": self.state,
            "retries": self.retries,
            "error": self.error,
            "time": self.time,
        }


@dataclass(frozen=True)
class RunLog:
    """One workflow run as the QStash logs API (`GET /v2/workflows/logs`) reports it.

    `from_api` reads what Upstash serves and what the local engine serves (today's, which
    answers in Upstash's shape, and older ones); see docs/engine.md for the fields.
    """

    run_id: str
    url: str
    state: str
    created_at: int
    completed_at: int | None
    steps: tuple[StepLog, ...]
    errors: tuple[str, ...] = ()
    retrying: bool = False
    failure_callback: bool = False
    next_steps: tuple[NextStep, ...] = ()

    @classmethod
    def from_api(cls, data: Any) -> RunLog:
        """Parse one entry of the logs API's `runs` list.

        Lenient where the two shapes differ (a missing `stepId`, `cursor` or `out`; numbers
        sent as strings); `errors` holds one line per unfinished step: why its last
        attempt failed.

        Raises:
            RunError: `data` is not a run (no `workflowRunId`).
        """
        if not isinstance(data, dict) or not isinstance(data.get("workflowRunId"), str):
            raise RunError(f"QStash answered a workflow run without a workflowRunId: {data!r:.200}")
        steps: list[StepLog] = []
        upcoming: list[NextStep] = []
        for group in _dicts(data.get("steps")):
            for step in _dicts(group.get("steps")):
                if group.get("type") == "next":
                    upcoming.append(_next_step(step))
                else:
                    steps.append(_step(step))
        completed = _int(data.get("workflowRunCompletedAt"))
        return cls(
            run_id=data["workflowRunId"],
            url=_text(data.get("workflowUrl")),
            state=_text(data.get("workflowState")) or RUN_STARTED,
            created_at=_int(data.get("workflowRunCreatedAt")),
            completed_at=completed or None,
            steps=tuple(steps),
            errors=tuple(step.error for step in upcoming if step.error),
            retrying=any(step.state == "STEP_RETRY" for step in upcoming),
            failure_callback=bool(data.get("failureFunction")),
            next_steps=tuple(upcoming),
        )

    @property
    def ended(self) -> bool:
        """The run is no longer `RUN_STARTED`."""
        return self.state != RUN_STARTED

    @cached_property
    def payload(self) -> dict[str, Any]:
        """The run-start JSON body (empty when it is not a JSON object); parsed once."""
        if not self.steps or self.steps[0].step_type != "Initial":
            return {}
        try:
            body = json.loads(self.steps[0].out)
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    @cached_property
    def work_steps(self) -> tuple[StepLog, ...]:
        """The steps after the initial payload."""
        return tuple(step for step in self.steps if step.step_type != "Initial")

    @property
    def messages(self) -> int:
        """QStash messages this run used: its start, one per step, and a failure callback."""
        return len(self.steps) + (1 if self.failure_callback else 0)

    @property
    def duration_ms(self) -> int | None:
        """Creation to completion, in milliseconds (None while running)."""
        return None if self.completed_at is None else self.completed_at - self.created_at

    @cached_property
    def skipped(self) -> bool:
        """A successful run that ended after one step returning nothing.

        That is how a generated Layer-3 route ends for an item already done (or gone).
        """
        work = self.work_steps
        return self.state == RUN_SUCCESS and len(work) <= 1 and _is_empty(work)

    def item(self) -> str:
        """What the run works on, from its payload: an item id, a page, a chunk, a pass."""
        return self._item

    @cached_property
    def _item(self) -> str:
        payload = self.payload
        for key, value in payload.items():
            if key.endswith("Id") and key != "rootRunId" and isinstance(value, str):
                return value
        for key, value in payload.items():
            if key.endswith("Ids") and isinstance(value, list):
                return f"chunk of {len(value)}"
        if "cursor" in payload:
            return f"page after {payload['cursor']}"
        if "rootRunId" in payload:
            return "first page"
        if not self.steps or self.steps[0].step_type != "Initial" or set(payload) - _PASS_FLAGS:
            return ""
        # A Layer-1 run: the pass it starts.
        if payload.get(DRY_RUN) is True:
            return "dry run"
        if SCHEDULED_MARKER in self.run_id:
            return "scheduled pass"
        return "pass (force)" if payload.get(FORCE) is True else "pass"


_PASS_FLAGS = {DRY_RUN, FORCE}


def _is_empty(steps: tuple[StepLog, ...]) -> bool:
    return all(step.out.strip() in ("", "null", "None") for step in steps)


def sdk_error_line(body: str) -> str | None:
    """`RuntimeError: boom` from a workflow SDK's error body (None: not such a body)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    if isinstance(parsed, dict) and parsed.get("message"):
        kind = parsed.get("error")
        return f"{kind}: {parsed['message']}" if kind else str(parsed["message"])
    return None


def _error_text(error: dict[str, Any]) -> str:
    """`RuntimeError: boom` from the SDK's error body, else QStash's own error line."""
    body = error.get("body")
    line = sdk_error_line(body) if isinstance(body, str) else None
    return line or _text(error.get("error")) or "delivery failed"


def _step(step: dict[str, Any]) -> StepLog:
    return StepLog(
        step_id=_int(step.get("stepId")),
        name=_text(step.get("stepName")),
        step_type=_text(step.get("stepType")),
        state=_text(step.get("state")),
        out=_text(step.get("out")),
        created_at=_int(step.get("createdAt")),
    )


def _next_step(step: dict[str, Any]) -> NextStep:
    attempts = _dicts(step.get("errors"))
    last = attempts[-1] if attempts else {}
    delivery = _int(step.get("nextDeliveryTime"))
    return NextStep(
        name=_text(step.get("stepName")),
        state=_text(step.get("state")),
        retries=_int(step.get("retries")),
        error=_error_text(last) if attempts else "",
        time=_int(last.get("time")),
        attempts=len(attempts),
        next_delivery=delivery or None,
    )


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The objects of a JSON list (anything else in it, or a non-list, is skipped)."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _int(value: Any) -> int:
    """A JSON number, or a string of digits (the docs type some numbers as strings); else 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return 0


def _text(value: Any) -> str:
    """A JSON string as is, nothing as `""`, anything else as its JSON text."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


@dataclass(frozen=True)
class RunLogPage:
    """One answer of the logs API: its runs, the next page's cursor, the engine's token."""

    runs: tuple[RunLog, ...]
    cursor: str | None
    change_token: str | None

    @classmethod
    def from_api(cls, data: Any) -> RunLogPage:
        """Parse an answer; no `cursor` (Upstash's last page) and `""` (older engines') are
        both "no next page"; `changeToken` is the local engine's opt-in extra.

        Raises:
            RunError: The answer is not a logs page, or holds a run without an id.
        """
        if not isinstance(data, dict):
            raise RunError(f"QStash answered the workflow logs with {data!r:.200}")
        cursor, token = data.get("cursor"), data.get("changeToken")
        return cls(
            runs=tuple(RunLog.from_api(entry) for entry in _dicts(data.get("runs"))),
            cursor=str(cursor) if cursor not in (None, "") else None,
            change_token=token if isinstance(token, str) and token else None,
        )


@dataclass(frozen=True)
class ItemError:
    """Why one run of a pass failed."""

    run_id: str
    layer: str
    item: str
    error: str

    def to_json(self) -> dict[str, str]:
        """The documented JSON form."""
        return {"runId": self.run_id, "layer": self.layer, "item": self.item, "error": self.error}


@dataclass(frozen=True)
class Progress:
    """A snapshot of a pass being watched.

    Attributes:
        run_id: The pass's Layer-1 run id.
        statistics: Layer 1's counts, once its first step has run.
        started: Layer-3 runs started so far.
        processed: Layer-3 runs that did the work and succeeded.
        skipped: Layer-3 runs that found their item already done, plus items whose run was
            not started because QStash deduplicated its run id.
        failed: Layer-3 runs that failed after their retries.
        canceled: Layer-3 runs that were cancelled.
        retrying: Runs (any layer) waiting to retry a failed delivery.
        messages: QStash messages the pass has used so far.
        elapsed_s: Seconds since the pass started (server clock).
        finished: Every run of the pass has ended.
        errors: Why runs failed (any layer), oldest first.
    """

    run_id: str
    statistics: Statistics | None
    started: int
    processed: int
    skipped: int
    failed: int
    canceled: int
    retrying: int
    messages: int
    elapsed_s: float
    finished: bool
    errors: tuple[ItemError, ...] = ()

    @property
    def done(self) -> int:
        """Items whose run has ended: processed, skipped, failed or cancelled."""
        return self.processed + self.skipped + self.failed + self.canceled

    @property
    def rate(self) -> float:
        """Items done per second."""
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def pass_failed(self) -> bool:
        """A Layer-1 or Layer-2 run failed or was cancelled: some items were never started."""
        return any(error.layer != "execute" for error in self.errors)


# How a watch ended.
COMPLETED = "completed"
COMPLETED_WITH_FAILURES = "completedWithFailures"
INTERRUPTED = "interrupted"
TIMED_OUT = "timedOut"
OUTCOMES = (COMPLETED, COMPLETED_WITH_FAILURES, INTERRUPTED, TIMED_OUT)


@dataclass(frozen=True)
class Summary:
    """The last snapshot of a pass and how watching it ended."""

    workflow: str
    force: bool
    outcome: str
    progress: Progress

    def to_json(self) -> dict[str, Any]:
        """The documented `lobeflow run --json` object."""
        progress = self.progress
        return {
            "schemaVersion": JSON_SCHEMA_VERSION,
            "workflow": self.workflow,
            "runId": progress.run_id,
            "dryRun": False,
            "force": self.force,
            "outcome": self.outcome,
            "statistics": None if progress.statistics is None else progress.statistics.to_json(),
            "started": progress.started,
            "processed": progress.processed,
            "skipped": progress.skipped,
            "failed": progress.failed,
            "canceled": progress.canceled,
            "messages": progress.messages,
            "durationSeconds": round(progress.elapsed_s, 3),
            "errors": [error.to_json() for error in progress.errors],
        }
