"""The workflow DLQ: restarting or resuming a failed run, retrying its failure callback."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from lobeflow_runtime.protocol import RUN_ID_PREFIX

from lobeflow.engine import errors
from lobeflow.engine.acceptance import Acceptance
from lobeflow.engine.dead_letters import DeadLetters
from lobeflow.engine.errors import ApiError
from lobeflow.engine.headers import merge_missing
from lobeflow.engine.message_building import new_id
from lobeflow.engine.model import (
    CALLBACK_CANCELED,
    CALLBACK_FAIL,
    CALLBACK_INPROGRESS,
    STEP,
    Message,
    Outcome,
    Run,
)
from lobeflow.engine.run_control import RunControl
from lobeflow.engine.state import EngineState

# Publish headers of the failed message that must not carry over to a restarted/resumed run.
_RERUN_DROPPED = frozenset(
    {
        "upstash-workflow-runid",
        "upstash-workflow-init",
        "upstash-workflow-calltype",
        "upstash-delay",
        "upstash-not-before",
        "upstash-deduplication-id",
        "upstash-content-based-deduplication",
    }
)


class WorkflowRecovery:
    """`/v2/workflows/dlq`: restart, resume, failure-callback retry and cancel."""

    def __init__(
        self,
        state: EngineState,
        dead_letters: DeadLetters,
        runs: RunControl,
        acceptance: Acceptance,
    ) -> None:
        """Recover the failed runs of `dead_letters`.

        Args:
            state: Its runs, pending messages and store.
            dead_letters: The DLQ entries of failed runs; publishes failure callbacks again.
            runs: Cancels a failure callback in progress.
            acceptance: Starts the new run of a restart or resume.
        """
        self._runs = state.runs_by_id
        self._messages = state.messages
        self._store = state.store
        self._dead_letters = dead_letters
        self._dlq = dead_letters.entries
        self._sources = dead_letters.sources
        self._run_control = runs
        self._accept = acceptance.accept

    def workflow_dlq_ids(self) -> list[str]:
        """Ids of the DLQ entries that failed a workflow run (restartable), newest first."""
        return [dlq_id for dlq_id in reversed(self._dlq) if self._failed_run(dlq_id) is not None]

    def restart(self, dlq_id: str, overrides: Mapping[str, str]) -> Run:
        """Start a dead-lettered run over with its initial payload, under a new run id.

        Args:
            dlq_id: The DLQ entry of the failed run; dropped once the new run is accepted.
            overrides: `Upstash-Flow-Control-Key/-Value`, `Upstash-Retries` to use instead of
                the failed run's.

        Returns:
            The new run.

        Raises:
            ApiError: 404 if `dlq_id` is not the DLQ entry of a failed workflow run.
        """
        run, entry, source = self._workflow_dlq(dlq_id)
        run_id = new_id(RUN_ID_PREFIX)
        headers = self._rerun_headers(source["headers"], run, run_id, overrides)
        self._accept(entry["url"], headers, base64.b64decode(run.history[0].body), internal=True)
        self._dead_letters.delete(dlq_id)
        return self._runs[run_id]

    def resume(self, dlq_id: str, overrides: Mapping[str, str]) -> Run:
        """Continue a dead-lettered run from its failed delivery, under a new run id.

        The new run inherits the history up to the last step delivered before the failure
        (a failed context.call callback goes back to the step that made the call), and that
        step is delivered again: the steps that succeeded are replayed, not executed.

        Returns:
            The new run.

        Raises:
            ApiError: 404 if `dlq_id` is not the DLQ entry of a failed workflow run.
        """
        run, entry, source = self._workflow_dlq(dlq_id)
        index = self._history_index(run, entry["messageId"])
        if index is None:
            raise ApiError(404, errors.DLQ_NOT_FOUND.format(id=dlq_id))
        while index > 0 and run.history[index].call_type != STEP:
            index -= 1
        run_id = new_id(RUN_ID_PREFIX)
        headers = self._rerun_headers(source["headers"], run, run_id, overrides)
        self._accept(
            entry["url"],
            headers,
            base64.b64decode(run.history[index].body),
            internal=True,
            history_prefix=run.history[:index],
        )
        self._dead_letters.delete(dlq_id)
        return self._runs[run_id]

    def retry_failure_callback(self, dlq_id: str) -> Run:
        """Publish the failure callback of a dead-lettered run again (the entry is kept).

        Returns:
            The failed run.

        Raises:
            ApiError: 404 if `dlq_id` is not the DLQ entry of a failed workflow run, 400 if
                that run has no failure callback or it has not failed (as on Upstash, only a
                `CALLBACK_FAIL` callback is retried).
        """
        run, entry, source = self._workflow_dlq(dlq_id)
        if not entry.get("failureCallback"):
            raise ApiError(400, errors.NO_FAILURE_CALLBACK.format(id=dlq_id))
        state = entry.get("failureCallbackInfo", {}).get("state", CALLBACK_FAIL)
        if state != CALLBACK_FAIL:
            raise ApiError(
                400,
                errors.FAILURE_CALLBACK_STATE.format(
                    id=dlq_id, state=state, detail="only a failed one can be retried"
                ),
            )
        message = Message(
            id=entry["messageId"],
            url=entry["url"],
            method=entry["method"],
            body=base64.b64decode(entry["bodyBase64"]),
            headers=dict(source["headers"]),
            created_at=entry["createdAt"],
            due=entry["notBefore"] / 1000,
            max_retries=entry["maxRetries"],
            retried=source["retried"],
            failure_callback=entry["failureCallback"],
            run_id=run.id,
            caller_ip=entry["callerIP"],
        )
        index = self._history_index(run, message.id)
        body = message.body
        if index is not None and run.history[index].call_type == STEP:
            body = run.body_upto(index)
        status = entry["responseStatus"] or None
        headers = [(n, value) for n, values in entry["responseHeader"].items() for value in values]
        if status is None:
            # No response came: the entry records the error text in place of a body.
            outcome = Outcome(None, headers, b"", entry["responseBody"])
        else:
            outcome = Outcome(status, headers, base64.b64decode(entry["responseBodyBase64"]), None)
        self._dead_letters.publish_failure_callback(message, run, body, outcome, dlq_id)
        return run

    def cancel_failure_callback(self, dlq_id: str) -> None:
        """Cancel the in-progress failure callback of a dead-lettered run.

        Raises:
            ApiError: 404 if `dlq_id` is not the DLQ entry of a failed workflow run, 400 if its
                failure callback is not in progress.
        """
        run, entry, _ = self._workflow_dlq(dlq_id)
        info = entry.get("failureCallbackInfo")
        pending = [m for m in self._messages.values() if m.failure_of == dlq_id]
        if info is None or info.get("state") != CALLBACK_INPROGRESS or not pending:
            state = "absent" if info is None else info.get("state")
            raise ApiError(
                400,
                errors.FAILURE_CALLBACK_STATE.format(
                    id=dlq_id, state=state, detail="only one in progress can be canceled"
                ),
            )
        for message in pending:
            self._run_control.cancel_message(message)
        self._dead_letters.set_callback_info(entry, {**info, "state": CALLBACK_CANCELED})
        if run.failure is not None:
            run.failure["state"] = CALLBACK_CANCELED
            self._store.put_run(run)

    def _failed_run(self, dlq_id: str) -> Run | None:
        """The run that DLQ entry `dlq_id` failed, if it is one and its source is known."""
        entry = self._dlq.get(dlq_id)
        if entry is None or dlq_id not in self._sources:
            return None
        run = self._runs.get(entry.get("workflowRunId") or "")
        if run is None or run.dlq_id != dlq_id or not run.history:
            return None
        return run

    def _workflow_dlq(self, dlq_id: str) -> tuple[Run, dict[str, Any], dict[str, Any]]:
        run = self._failed_run(dlq_id)
        if run is None:
            raise ApiError(404, errors.DLQ_NOT_FOUND.format(id=dlq_id))
        return run, self._dlq[dlq_id], self._sources[dlq_id]

    @staticmethod
    def _history_index(run: Run, message_id: str) -> int | None:
        return next(
            (i for i, entry in enumerate(run.history) if entry.message_id == message_id), None
        )

    @staticmethod
    def _rerun_headers(
        source: Mapping[str, str], run: Run, run_id: str, overrides: Mapping[str, str]
    ) -> dict[str, str]:
        """Run-start publish headers for a new run made from a failed run's message."""
        headers = {n: v for n, v in source.items() if n.lower() not in _RERUN_DROPPED}
        headers = merge_missing(headers, run.config_headers)
        headers = merge_missing(
            headers, {"Upstash-Forward-" + n: v for n, v in run.initial_headers.items()}
        )
        replaced = {name.lower() for name in overrides}
        headers = {n: v for n, v in headers.items() if n.lower() not in replaced}
        headers.update(overrides)
        for name in headers:
            if name.lower() == "upstash-failure-callback-workflow-runid":
                headers[name] = run_id
        headers["Upstash-Workflow-RunId"] = run_id
        headers["Upstash-Workflow-Init"] = "true"
        return headers
