"""Workflow run views: raw step lists and the `WorkflowRunLog` shape of the logs API."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any

from lobeflow.engine.model import (
    ACTIVE,
    FROM_CALLBACK,
    RETRY,
    RUN_FAILED,
    STEP,
    Message,
    Run,
)

_STEP_LOG_FIELDS = ("sleepFor", "sleepUntil", "targetStep", "waitEventId", "timeout", "waitTimeout")


def raw_steps(run: Run) -> list[dict[str, str]]:
    """The run's history as `GET /v2/workflows/runs/{id}` returns it."""
    return [
        {"messageId": entry.message_id, "body": entry.body, "callType": entry.call_type}
        for entry in run.history
    ]


def _decode_step(body: str) -> dict[str, Any] | None:
    try:
        step = json.loads(base64.b64decode(body))
    except ValueError:
        return None
    return step if isinstance(step, dict) else None


def _out_string(out: Any) -> str:
    if out is None:
        return ""
    return out if isinstance(out, str) else json.dumps(out)


def run_log(run: Run, pending: Iterable[Message]) -> dict[str, Any]:
    """One run in the `WorkflowRunLog` shape; the first step group is the `Initial` step."""
    initial = run.history[0] if run.history else None
    groups: list[dict[str, Any]] = [
        {
            "type": "sequential",
            "steps": [
                {
                    "stepId": 0,
                    "stepName": "init",
                    "stepType": "Initial",
                    "callType": "step",
                    "messageId": run.start_message_id,
                    "out": ""
                    if initial is None
                    else base64.b64decode(initial.body).decode("utf-8", "replace"),
                    "concurrent": 1,
                    "state": "STEP_SUCCESS",
                    "createdAt": run.created_at,
                    "headers": {name: [value] for name, value in run.initial_headers.items()},
                }
            ],
        }
    ]
    parallel: list[dict[str, Any]] = []
    for entry in run.history[1:]:
        if entry.call_type != STEP:
            continue
        step = _decode_step(entry.body)
        if step is None:
            continue
        concurrent = int(step.get("concurrent") or 1)
        if concurrent > 1 and not step.get("stepId"):
            continue  # a parallel plan step; its result is logged instead
        log: dict[str, Any] = {
            "stepId": step.get("stepId"),
            "stepName": step.get("stepName", ""),
            "stepType": step.get("stepType", ""),
            "callType": "step",
            "messageId": entry.message_id,
            "out": _out_string(step.get("out")),
            "concurrent": concurrent,
            "state": "STEP_SUCCESS",
            "createdAt": entry.created_at,
        }
        for name in _STEP_LOG_FIELDS:
            if step.get(name) is not None:
                log[name] = step[name]
        if concurrent > 1:
            parallel.append(log)
            if len(parallel) == concurrent:
                groups.append({"type": "parallel", "steps": parallel})
                parallel = []
        else:
            groups.append({"type": "sequential", "steps": [log]})
    if parallel:
        groups.append({"type": "parallel", "steps": parallel})

    upcoming: list[dict[str, Any]] = [
        {
            "messageId": message.id,
            "state": "STEP_RETRY" if message.state == RETRY else "STEP_PROGRESS",
            "retries": message.max_retries,
            **({"retryDelay": message.retry_delay} if message.retry_delay else {}),
        }
        for message in pending
        if message.call_type in (STEP, FROM_CALLBACK)
        and message.state in (ACTIVE, RETRY, "CREATED")
    ]
    if run.state == RUN_FAILED and run.fail_step is not None:
        failed = run.fail_step
        upcoming.append(
            {
                "messageId": failed["messageId"],
                **({"stepName": failed["stepName"]} if failed.get("stepName") else {}),
                "state": "STEP_FAILED",
                "retries": failed["retries"],
                "errors": [
                    {
                        "error": failed["error"],
                        "body": failed["body"],
                        "headers": failed["headers"],
                        "status": failed["status"],
                        "time": failed["time"],
                    }
                ],
            }
        )
    if upcoming:
        groups.append({"type": "next", "steps": upcoming})

    out: dict[str, Any] = {
        "workflowRunId": run.id,
        "workflowUrl": run.url,
        "workflowState": run.state,
        "workflowRunCreatedAt": run.created_at,
        "steps": groups,
    }
    optional = {
        "workflowRunCompletedAt": run.completed_at,
        "workflowRunResponse": run.response,
        "failureFunction": run.failure,
        "dlqId": run.dlq_id,
        "label": run.label,
        "flowControlKey": run.flow_key,
    }
    out.update({key: value for key, value in optional.items() if value is not None})
    return out
