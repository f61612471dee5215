"""What a pass is made of: statistics, run logs, progress snapshots and the final summary.

Every `to_json()` here is part of the documented `--json` output (docs/run.md): keys are
camelCase, like the QStash API and the generated payloads, and are never renamed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from lobeflow.errors import LobeflowError

JSON_SCHEMA_VERSION = 1

RUN_STARTED = "RUN_STARTED"
RUN_SUCCESS = "RUN_SUCCESS"
RUN_FAILED = "RUN_FAILED"
RUN_CANCELED = "RUN_CANCELED"
RUN_STATES = (RUN_STARTED, RUN_SUCCESS, RUN_FAILED, RUN_CANCELED)

# The three layers, named as in the answers files (`process_*`, `paginate_*`, `execute_*`).
LAYERS = ("process", "paginate", "execute")


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
            for value in (
                data.get(key) for key in ("totalEligible", "toProcess", "alreadyProcessed")
            )
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
    """A delivery of a run not done yet: in progress, waiting to retry, or failed for good."""

    name: str
    state: str
    retries: int
    error: str
    time: int

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
    """One workflow run as the QStash logs API (`GET /v2/workflows/logs`) reports it."""

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
    def from_api(cls, data: dict[str, Any]) -> RunLog:
        """Parse one entry of the logs API's `runs` list."""
        steps: list[StepLog] = []
        errors: list[str] = []
        upcoming: list[NextStep] = []
        retrying = False
        for group in data.get("steps") or []:
            for step in group.get("steps") or []:
                if group.get("type") == "next":
                    retrying = retrying or step.get("state") == "STEP_RETRY"
                    step_errors = [_error_text(error) for error in step.get("errors") or []]
                    errors.extend(step_errors)
                    last = (step.get("errors") or [{}])[-1]
                    upcoming.append(
                        NextStep(
                            name=str(step.get("stepName") or ""),
                            state=str(step.get("state") or ""),
                            retries=int(step.get("retries") or 0),
                            error=step_errors[-1] if step_errors else "",
                            time=int(last.get("time") or 0) if isinstance(last, dict) else 0,
                        )
                    )
                    continue
                steps.append(
                    StepLog(
                        step_id=int(step.get("stepId") or 0),
                        name=str(step.get("stepName") or ""),
                        step_type=str(step.get("stepType") or ""),
                        state=str(step.get("state") or ""),
                        out=str(step.get("out") or ""),
                        created_at=int(step.get("createdAt") or 0),
                    )
                )
        completed = data.get("workflowRunCompletedAt")
        return cls(
            run_id=str(data["workflowRunId"]),
            url=str(data.get("workflowUrl") or ""),
            state=str(data.get("workflowState") or RUN_STARTED),
            created_at=int(data.get("workflowRunCreatedAt") or 0),
            completed_at=int(completed) if completed else None,
            steps=tuple(steps),
            errors=tuple(errors),
            retrying=retrying,
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
        if payload.get("dryRun") is True:
            return "dry run"
        return "pass (force)" if payload.get("force") is True else "pass"


_PASS_FLAGS = {"dryRun", "force"}


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
    return line or str(error.get("error") or "delivery failed")


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
