"""Workflow run views: raw step lists and the `WorkflowRunLog` shape of the logs API.

The logs answer follows what Upstash serves (its SDKs' `WorkflowRunLog`/`StepLog` types
and its live tests): field for field, with nothing Upstash does not send. docs/engine.md
has the table of fields and where they differ.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from functools import lru_cache
from http import HTTPStatus
from typing import Any

from lobeflow.engine.durations import parse_duration
from lobeflow.engine.headers import multi
from lobeflow.engine.model import (
    FAILURE_CALL,
    FROM_CALLBACK,
    PENDING_STATES,
    RETRY,
    RUN_FAILED,
    STEP,
    TO_CALLBACK,
    HistoryEntry,
    Message,
    Outcome,
    Run,
)

# Step fields copied from the step as the SDK published it (`timeout` is renamed, sleeps
# converted to milliseconds as Upstash documents them).
_STEP_LOG_FIELDS = ("waitEventId", "waitTimeout")
# Failed attempts kept per message, and the part of each response body kept with them.
MAX_ATTEMPT_ERRORS = 25
ATTEMPT_BODY_CHARS = 64 * 1024


def default_retry_delay(max_retry_delay: float) -> str:
    """The engine's default backoff (`min(max, e^(2.5 * (retried + 1)))` seconds) as an
    `Upstash-Retry-Delay` expression in milliseconds: what the log reports as `retryDelay`
    for a message that set none but may be retried."""
    millis = float(max_retry_delay) * 1000
    shown = str(int(millis)) if millis.is_integer() else f"{millis:g}"
    return f"min({shown}, 1000 * exp(2.5 * (retried + 1)))"


def raw_steps(run: Run) -> list[dict[str, str]]:
    """The run's history as `GET /v2/workflows/runs/{id}` returns it."""
    return [
        {"messageId": entry.message_id, "body": entry.body, "callType": entry.call_type}
        for entry in run.history
    ]


def attempt_error(outcome: Outcome, time_ms: int) -> dict[str, Any]:
    """One failed attempt as the log's `errors` list holds it.

    `error` is the status line for a response outside 2xx (`500 Internal Server Error`,
    as Upstash words it), else why the attempt failed (no response, a non-workflow
    endpoint...); `status` is 0 when no response came.
    """
    status = outcome.status or 0
    if status and not 200 <= status < 300:
        try:
            text = f"{status} {HTTPStatus(status).phrase}"
        except ValueError:
            text = str(status)
    else:
        text = outcome.error or ""
    return {
        "error": text,
        "body": outcome.recorded_body[:ATTEMPT_BODY_CHARS].decode("utf-8", "replace"),
        "headers": multi(outcome.headers),
        "status": status,
        "time": time_ms,
    }


def record_attempt(message: Message, outcome: Outcome, time_ms: int) -> None:
    """Remember a failed attempt (the newest `MAX_ATTEMPT_ERRORS`) and a reported step name."""
    message.attempt_errors.append(attempt_error(outcome, time_ms))
    del message.attempt_errors[:-MAX_ATTEMPT_ERRORS]
    for name, value in outcome.headers:
        if name.lower() == "upstash-error-step-name" and value:
            message.error_step = value


@lru_cache(maxsize=512)
def _meta(raw: str) -> dict[str, Any]:
    """An entry's log fields (shared between calls: never mutate the result)."""
    if not raw:
        return {}
    try:
        meta = json.loads(raw)
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def _decode_step(body: str) -> dict[str, Any] | None:
    try:
        step = json.loads(base64.b64decode(body))
    except ValueError:
        return None
    return step if isinstance(step, dict) else None


def _text(body: str) -> str:
    return base64.b64decode(body).decode("utf-8", "replace")


def _out_string(out: Any) -> str:
    if out is None:
        return ""
    return out if isinstance(out, str) else json.dumps(out)


def _retry_fields(retries: int, retry_delay: str | None, default_delay: str) -> dict[str, Any]:
    """`retries`, and `retryDelay` when one was set or a retry may come (as Upstash)."""
    out: dict[str, Any] = {"retries": retries}
    if retry_delay is not None or retries > 0:
        out["retryDelay"] = retry_delay if retry_delay is not None else default_delay
    return out


def _config(meta: dict[str, Any], default_delay: str) -> dict[str, Any]:
    """A finished step's `headers`, `retries` and `retryDelay` (none for an old entry)."""
    if "retries" not in meta:
        return {}
    return {
        "headers": meta.get("headers") or {},
        **_retry_fields(int(meta["retries"]), meta.get("retryDelay"), default_delay),
    }


def _sleep_fields(step: dict[str, Any]) -> dict[str, int]:
    """`sleepFor` (a duration) and `sleepUntil` (unix time) in milliseconds.

    The SDKs send seconds (a number, or a duration such as `1d` from TypeScript); Upstash
    documents both fields as milliseconds, and types them as numbers.
    """
    out: dict[str, int] = {}
    for name in ("sleepFor", "sleepUntil"):
        value = step.get(name)
        if isinstance(value, bool) or value is None:
            continue
        seconds = parse_duration(str(value))
        if seconds is not None:
            out[name] = round(seconds * 1000)
    return out


def _call_fields(to_call: HistoryEntry | None, reply: HistoryEntry | None) -> dict[str, Any]:
    """A `context.call` step's request (its toCallback) and response (its fromCallback)."""
    out: dict[str, Any] = {}
    if to_call is not None:
        meta = _meta(to_call.meta)
        out["callUrl"] = meta.get("callUrl", "")
        out["callMethod"] = meta.get("callMethod", "POST")
        out["callHeaders"] = meta.get("headers") or {}
        out["callBody"] = _text(to_call.body)
    callback = None if reply is None else _decode_step(reply.body)
    if callback is not None:
        out["callResponseStatus"] = int(callback.get("status") or 0)
        body = callback.get("body")
        out["callResponseBody"] = _text(body) if isinstance(body, str) else ""
        header = callback.get("header")
        out["callResponseHeaders"] = header if isinstance(header, dict) else {}
    return out


def _initial_step(run: Run, default_delay: str) -> dict[str, Any]:
    initial = run.history[0] if run.history else None
    meta = {} if initial is None else _meta(initial.meta)
    log: dict[str, Any] = {
        "stepName": "init",
        "stepType": "Initial",
        "callType": "step",
        "messageId": run.start_message_id,
        "out": "" if initial is None else _text(initial.body),
        "concurrent": 1,
        "state": "STEP_SUCCESS",
        "createdAt": run.created_at,
        "headers": {name: [value] for name, value in run.initial_headers.items()},
    }
    log.update(_config(meta, default_delay))
    return log


def _finished_groups(run: Run, default_delay: str) -> list[dict[str, Any]]:
    """The `sequential` and `parallel` groups: the initial step, then each step result."""
    groups: list[dict[str, Any]] = [
        {"type": "sequential", "steps": [_initial_step(run, default_delay)]}
    ]
    parallel: list[dict[str, Any]] = []
    to_call: HistoryEntry | None = None
    reply: HistoryEntry | None = None
    for entry in run.history[1:]:
        if entry.call_type == TO_CALLBACK:
            to_call, reply = entry, None
            continue
        if entry.call_type == FROM_CALLBACK:
            reply = entry
            continue
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
        log.update(_sleep_fields(step))
        if step.get("timeout") is not None:
            log["waitTimeoutDuration"] = step["timeout"]
        meta = _meta(entry.meta)
        if "waitTimeoutDeadline" in meta:
            log["waitTimeoutDeadline"] = meta["waitTimeoutDeadline"]
        if log["stepType"] == "Call":
            log.update(_call_fields(to_call, reply))
            to_call = reply = None
        log.update(_config(meta, default_delay))
        if concurrent > 1:
            parallel.append(log)
            if len(parallel) == concurrent:
                groups.append({"type": "parallel", "steps": parallel})
                parallel = []
        else:
            groups.append({"type": "sequential", "steps": [log]})
    if parallel:
        groups.append({"type": "parallel", "steps": parallel})
    return groups


def _next_step(message: Message, default_delay: str) -> dict[str, Any]:
    """A step not finished yet: in progress, or waiting to be retried."""
    retrying = message.retried > 0
    out: dict[str, Any] = {"messageId": message.id}
    if message.error_step:
        out["stepName"] = message.error_step
    out["state"] = "STEP_RETRY" if retrying else "STEP_PROGRESS"
    out.update(_retry_fields(message.max_retries, message.retry_delay, default_delay))
    if message.attempt_errors:
        out["errors"] = list(message.attempt_errors)
    if message.state == RETRY:
        out["nextDeliveryTime"] = int(message.due * 1000)
    return out


def stopped_step(message: Message, default_delay: str) -> dict[str, Any]:
    """A step a cancel stopped, as its run's `next` group keeps showing it."""
    out = _next_step(message, default_delay)
    out.pop("nextDeliveryTime", None)
    out["state"] = "STEP_CANCELED"
    return out


def failed_step(message: Message) -> dict[str, Any]:
    """The delivery that failed its run, with every failed attempt (kept on the run)."""
    return {
        "messageId": message.id,
        "stepName": message.error_step,
        "retries": message.max_retries,
        "retryDelay": message.retry_delay,
        "errors": list(message.attempt_errors),
    }


def _failed_log(failed: dict[str, Any], default_delay: str) -> dict[str, Any]:
    out: dict[str, Any] = {"messageId": failed["messageId"]}
    if failed.get("stepName"):
        out["stepName"] = failed["stepName"]
    out["state"] = "STEP_FAILED"
    if "errors" in failed:
        out.update(_retry_fields(failed["retries"], failed.get("retryDelay"), default_delay))
        out["errors"] = failed["errors"]
    else:  # recorded by an older engine: the last attempt only, `retries` as retried
        out["retries"] = failed["retries"]
        fields = ("error", "body", "headers", "status", "time")
        out["errors"] = [{name: failed[name] for name in fields}]
    return out


def run_log(run: Run, pending: Iterable[Message], default_delay: str) -> dict[str, Any]:
    """One run in the `WorkflowRunLog` shape.

    Args:
        run: The run.
        pending: Its messages not final yet (steps in progress or retried, its failure
            callback).
        default_delay: What `retryDelay` reports for a message that set none
            (`default_retry_delay`).
    """
    groups = _finished_groups(run, default_delay)
    upcoming: list[dict[str, Any]] = []
    failure_call: Message | None = None
    for message in pending:
        if message.state not in PENDING_STATES:
            continue
        if message.call_type in (STEP, FROM_CALLBACK):
            upcoming.append(_next_step(message, default_delay))
        elif message.call_type == FAILURE_CALL:
            failure_call = message
    upcoming.extend(run.canceled_steps)
    if run.state == RUN_FAILED and run.fail_step is not None:
        upcoming.append(_failed_log(run.fail_step, default_delay))
    if upcoming:
        groups.append({"type": "next", "steps": upcoming})

    out: dict[str, Any] = {
        "workflowRunId": run.id,
        "workflowUrl": run.url,
        "workflowState": run.state,
        "workflowRunCreatedAt": run.created_at,
        "steps": groups,
    }
    failure = None if run.failure is None else dict(run.failure)
    if failure is not None and failure_call is not None:
        if failure_call.attempt_errors:
            failure["errors"] = list(failure_call.attempt_errors)
        if failure_call.state == RETRY:
            failure["nextDeliveryTime"] = int(failure_call.due * 1000)
    optional = {
        "workflowRunCompletedAt": run.completed_at,
        "workflowRunResponse": run.response,
        "failureFunction": failure,
        "dlqId": run.dlq_id,
        "label": run.label,
        "flowControlKey": run.flow_key,
    }
    out.update({key: value for key, value in optional.items() if value is not None})
    return out
