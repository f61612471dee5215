"""Runs: creating one at its first step, recording its history, ending and cancelling it."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from lobeflow.engine import errors
from lobeflow.engine.errors import ApiError
from lobeflow.engine.headers import forwarded, run_config_headers
from lobeflow.engine.ledger import Ledger
from lobeflow.engine.message_building import feature_set, log_meta, now_ms, step_identity
from lobeflow.engine.model import (
    CANCELED,
    FROM_CALLBACK,
    PENDING_STATES,
    RUN_CANCELED,
    RUN_STARTED,
    RUN_SUCCESS,
    STEP,
    HistoryEntry,
    Message,
    Run,
)
from lobeflow.engine.state import EngineState
from lobeflow.engine.workflow import default_retry_delay, stopped_step


class RunControl:
    """Workflow runs: their creation, history, end and cancellation."""

    def __init__(
        self,
        state: EngineState,
        ledger: Ledger,
        on_change: Callable[[], None],
        max_retry_delay: float,
    ) -> None:
        """Control the runs of `state`.

        Args:
            state: Its runs, pending messages, active-run count and store.
            ledger: Finishes the messages a cancel stops.
            on_change: Called once a run has ended (threads may be waiting for it).
            max_retry_delay: The engine's cap on a retry delay (a stopped step's log shows it).
        """
        self._state = state
        self._runs = state.runs_by_id
        self._messages = state.messages
        self._store = state.store
        self._ledger = ledger
        self._on_change = on_change
        self._max_retry_delay = max_retry_delay

    def load(self, runs: Iterable[Run]) -> None:
        """Take back the runs a store kept (their step ids rebuilt, the active ones counted)."""
        for run in runs:
            self._runs[run.id] = run
            for entry in run.history[1:]:
                _remember_step(run, entry)
            if run.state == RUN_STARTED:
                self._state.active_runs += 1

    def create(
        self,
        run_id: str,
        message: Message,
        lower: dict[str, str],
        history_prefix: Sequence[HistoryEntry] = (),
    ) -> Run:
        """Start run `run_id` with `message` as its first step.

        Args:
            run_id: The run id (an ended run of that id is replaced).
            message: The run-start message.
            lower: Its publish headers, names in lower case.
            history_prefix: Steps the new run inherits first (resuming a failed run).
        """
        features = feature_set(lower)
        run = Run(
            id=run_id,
            url=lower.get("upstash-workflow-url") or message.url,
            created_at=message.created_at,
            features=features,
            config_headers=run_config_headers(message.headers)
            if "WF_TriggerOnConfig" in features
            else {},
            label=message.label,
            flow_key=message.flow_key,
            start_message_id=message.id,
            initial_headers={
                name: value
                for name, value in forwarded(message.headers).values()
                if not name.lower().startswith("upstash-workflow-")
            },
        )
        self._runs[run_id] = run
        self._state.active_runs += 1
        for inherited in history_prefix:
            run.history.append(inherited)
            self._store.add_entry(run.id, len(run.history) - 1, inherited)
            if len(run.history) > 1:  # the first entry is the run's start, not a step
                _remember_step(run, inherited)
        self.append_entry(run, message, message.body, STEP)
        self._store.put_run(run)
        return run

    def append_entry(
        self,
        run: Run,
        message: Message,
        body: bytes,
        call_type: str,
        log_extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Record `message` as the run's next history entry."""
        entry = HistoryEntry.create(
            message.id,
            base64.b64encode(body).decode(),
            call_type,
            now_ms(),
            log_meta(message, log_extra),
        )
        run.history.append(entry)
        self._store.add_entry(run.id, len(run.history) - 1, entry)

    # ---------------------------------------------------------------- run control

    def end_run(self, run_id: str, cancel: bool, response: str | None) -> None:
        """`DELETE /v2/workflows/runs/{id}`: success (or cancel); repeating it is harmless.

        Raises:
            ApiError: 404 for an unknown run.
        """
        run = self._runs.get(run_id)
        if run is None:
            raise ApiError(404, errors.RUN_NOT_FOUND.format(id=run_id))
        if run.state != RUN_STARTED:
            return
        if response:
            run.response = response
        self.end(run, RUN_CANCELED if cancel else RUN_SUCCESS)

    def end(self, run: Run, state: str) -> None:
        """End a started run in `state`; a cancel also cancels its pending messages."""
        run.state = state
        run.completed_at = now_ms()
        self._state.active_runs -= 1
        if state == RUN_CANCELED:
            default_delay = default_retry_delay(self._max_retry_delay)
            for message_id in list(run.pending):
                message = self._messages.get(message_id)
                if message is not None and message.state in PENDING_STATES:
                    if message.call_type in (STEP, FROM_CALLBACK):  # the log keeps showing it
                        run.canceled_steps.append(stopped_step(message, default_delay))
                    self.cancel_message(message)
        self._store.put_run(run)
        self._on_change()

    def cancel_message(self, message: Message) -> None:
        """Cancel a pending message (a delivery in flight finishes but is not retried)."""
        if message.state in PENDING_STATES:
            self._ledger.finish(message, CANCELED)

    def cancel_runs(self, run_ids: list[str]) -> int:
        """Cancel the given active runs; returns how many were cancelled."""
        cancelled = 0
        for run_id in run_ids:
            run = self._runs.get(run_id)
            if run is not None and run.state == RUN_STARTED:
                self.end(run, RUN_CANCELED)
                cancelled += 1
        return cancelled


def _remember_step(run: Run, entry: HistoryEntry) -> None:
    """Record a step entry's `(stepId, targetStep)`, so a duplicate publish of it is dropped."""
    if entry.call_type == STEP:
        key = step_identity(base64.b64decode(entry.body))
        if key is not None:
            run.step_ids[key] = entry.message_id
