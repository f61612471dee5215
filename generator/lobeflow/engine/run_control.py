"""Runs: creating one at its first step, recording its history, ending and cancelling it."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

from lobeflow.engine import errors
from lobeflow.engine.errors import ApiError
from lobeflow.engine.headers import forwarded, run_config_headers
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


class RunControl(EngineState):
    """Workflow runs: their creation, history, end and cancellation."""

    def _create_run(
        self,
        run_id: str,
        message: Message,
        lower: dict[str, str],
        history_prefix: Sequence[HistoryEntry] = (),
    ) -> Run:
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
        self.runs_by_id[run_id] = run
        self._active_runs += 1
        for inherited in history_prefix:
            run.history.append(inherited)
            self.store.add_entry(run.id, len(run.history) - 1, inherited)
            if len(run.history) > 1 and inherited.call_type == STEP:
                key = step_identity(base64.b64decode(inherited.body))
                if key is not None:
                    run.step_ids[key] = inherited.message_id
        self._append_entry(run, message, message.body, STEP)
        self.store.put_run(run)
        return run

    def _append_entry(
        self,
        run: Run,
        message: Message,
        body: bytes,
        call_type: str,
        log_extra: Mapping[str, Any] | None = None,
    ) -> None:
        entry = HistoryEntry.create(
            message.id,
            base64.b64encode(body).decode(),
            call_type,
            now_ms(),
            log_meta(message, log_extra),
        )
        run.history.append(entry)
        self.store.add_entry(run.id, len(run.history) - 1, entry)

    # ---------------------------------------------------------------- run control

    def end_run(self, run_id: str, cancel: bool, response: str | None) -> None:
        """`DELETE /v2/workflows/runs/{id}`: success (or cancel); repeating it is harmless.

        Raises:
            ApiError: 404 for an unknown run.
        """
        run = self.runs_by_id.get(run_id)
        if run is None:
            raise ApiError(404, errors.RUN_NOT_FOUND.format(id=run_id))
        if run.state != RUN_STARTED:
            return
        if response:
            run.response = response
        self._end_run(run, RUN_CANCELED if cancel else RUN_SUCCESS)

    def _end_run(self, run: Run, state: str) -> None:
        run.state = state
        run.completed_at = now_ms()
        self._active_runs -= 1
        if state == RUN_CANCELED:
            default_delay = default_retry_delay(self.config.max_retry_delay)
            for message_id in list(run.pending):
                message = self.messages.get(message_id)
                if message is not None and message.state in PENDING_STATES:
                    if message.call_type in (STEP, FROM_CALLBACK):  # the log keeps showing it
                        run.canceled_steps.append(stopped_step(message, default_delay))
                    self.cancel_message(message)
        self.store.put_run(run)
        self._notify()

    def cancel_message(self, message: Message) -> None:
        """Cancel a pending message (a delivery in flight finishes but is not retried)."""
        if message.state in PENDING_STATES:
            self._finish(message, CANCELED)

    def cancel_runs(self, run_ids: list[str]) -> int:
        """Cancel the given active runs; returns how many were cancelled."""
        cancelled = 0
        for run_id in run_ids:
            run = self.runs_by_id.get(run_id)
            if run is not None and run.state == RUN_STARTED:
                self._end_run(run, RUN_CANCELED)
                cancelled += 1
        return cancelled
