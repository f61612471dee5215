"""The shape of Upstash's workflow logs answer, as a checker for tests.

Taken from what Upstash documents and its SDKs type: `WorkflowRunLog`, `StepLog`,
`StepError` and `FailureFunctionLog` in `@upstash/workflow` 1.3.3 (`index.d.ts`), the
Workflow OpenAPI (`GroupedSteps`, `StepInfo`, `FailureFunction`, `WorkflowRun`) and the
SDK's live test of `client.logs()` (no `cursor` on the last page, no `stepId` on the
initial step, `headers`/`retries`/`retryDelay` on finished steps, `errors` on a step being
retried). `problems(page)` lists every departure; an empty list means Upstash's shape.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

RUN_KEYS = {
    "workflowRunId",
    "workflowUrl",
    "workflowState",
    "workflowRunCreatedAt",
    "workflowRunCompletedAt",
    "workflowRunResponse",
    "workflowRunCallerIp",
    "failureFunction",
    "invoker",
    "dlqId",
    "label",
    "labels",
    "flowControlKey",
    "steps",
}
STEP_KEYS = {
    "stepId",
    "stepName",
    "stepType",
    "callType",
    "messageId",
    "out",
    "retries",
    "retryDelay",
    "concurrent",
    "state",
    "createdAt",
    "headers",
    "callUrl",
    "callMethod",
    "callHeaders",
    "callBody",
    "callResponseStatus",
    "callResponseBody",
    "callResponseHeaders",
    "invokedWorkflowRunId",
    "invokedWorkflowUrl",
    "invokedWorkflowCreatedAt",
    "invokedWorkflowRunBody",
    "invokedWorkflowRunHeaders",
    "sleepFor",
    "sleepUntil",
    "waitEventId",
    "waitTimeoutDuration",
    "waitTimeoutDeadline",
    "waitTimeout",
}
NEXT_KEYS = {
    "messageId",
    "stepName",
    "state",
    "retries",
    "retryDelay",
    "errors",
    "nextDeliveryTime",
}
ERROR_KEYS = {"error", "body", "headers", "status", "time"}
FAILURE_KEYS = {
    "messageId",
    "url",
    "state",
    "failHeaders",
    "failStatus",
    "failResponse",
    "dlqId",
    "errors",
    "responseBody",
    "responseHeaders",
    "responseStatus",
    "nextDeliveryTime",
    "maxRetries",
}
RUN_STATES = {"RUN_STARTED", "RUN_SUCCESS", "RUN_FAILED", "RUN_CANCELED"}
STEP_STATES = {"STEP_PROGRESS", "STEP_SUCCESS", "STEP_RETRY", "STEP_FAILED"}
NEXT_STATES = {"STEP_PROGRESS", "STEP_RETRY", "STEP_FAILED", "STEP_CANCELED"}
CALLBACK_STATES = {"CALLBACK_INPROGRESS", "CALLBACK_SUCCESS", "CALLBACK_FAIL", "CALLBACK_CANCELED"}


def page_problems(page: Any, *, last: bool) -> list[str]:
    """Departures of a whole answer (`last`: no page follows, so no `cursor`)."""
    if not isinstance(page, dict):
        return [f"answer is not an object: {page!r:.80}"]
    found = [f"answer: unexpected key {key!r}" for key in sorted(set(page) - {"cursor", "runs"})]
    if last and "cursor" in page:
        found.append(f"answer: a cursor ({page['cursor']!r}) on the last page")
    if not last and not (isinstance(page.get("cursor"), str) and page["cursor"]):
        found.append("answer: no cursor although a page follows")
    for run in page.get("runs") or []:
        found += run_problems(run)
    return found


def run_problems(run: Any) -> list[str]:
    """Departures of one `WorkflowRunLog`."""
    if not isinstance(run, dict):
        return [f"run is not an object: {run!r:.80}"]
    where = f"run {run.get('workflowRunId')}"
    found = _keys(where, run, RUN_KEYS)
    found += _types(
        where,
        run,
        {
            "workflowRunId": str,
            "workflowUrl": str,
            "workflowRunCreatedAt": int,
            "steps": list,
        },
        optional={
            "workflowRunCompletedAt": int,
            "workflowRunResponse": str,
            "dlqId": str,
            "label": str,
            "flowControlKey": str,
            "failureFunction": dict,
        },
    )
    if run.get("workflowState") not in RUN_STATES:
        found.append(f"{where}: workflowState {run.get('workflowState')!r}")
    failure = run.get("failureFunction")
    if isinstance(failure, dict):
        found += _failure_problems(f"{where} failureFunction", failure)
    groups = run.get("steps") if isinstance(run.get("steps"), list) else []
    for number, group in enumerate(groups):
        found += _group_problems(f"{where} group {number}", group, first=number == 0)
    if groups and not any(g.get("type") == "next" for g in groups if isinstance(g, dict)):
        if run.get("workflowState") == "RUN_FAILED":
            found.append(f"{where}: a failed run without its failed step in a next group")
    return found


def _group_problems(where: str, group: Any, *, first: bool) -> list[str]:
    if not isinstance(group, dict):
        return [f"{where}: not an object"]
    found = _keys(where, group, {"type", "steps"})
    kind, steps = group.get("type"), group.get("steps")
    if kind not in ("sequential", "parallel", "next") or not isinstance(steps, list) or not steps:
        return [*found, f"{where}: type {kind!r} with steps {steps!r:.80}"]
    if kind == "sequential" and len(steps) != 1:
        found.append(f"{where}: a sequential group of {len(steps)} steps")
    for number, step in enumerate(steps):
        label = f"{where} step {number}"
        if kind == "next":
            found += _next_problems(label, step)
        else:
            found += _step_problems(label, step, initial=first and number == 0)
    return found


def _step_problems(where: str, step: Any, *, initial: bool) -> list[str]:
    if not isinstance(step, dict):
        return [f"{where}: not an object"]
    found = _keys(where, step, STEP_KEYS)
    found += _types(
        where,
        step,
        {
            "stepName": str,
            "stepType": str,
            "callType": str,
            "messageId": str,
            "retries": int,
            "concurrent": int,
            "createdAt": int,
            "headers": dict,
        },
        # `out` is left out for an empty initial body in Upstash's documented example.
        optional={
            "out": str,
            "retryDelay": str,
            "sleepFor": int,
            "sleepUntil": int,
            "waitEventId": str,
        },
    )
    if step.get("state") not in STEP_STATES:
        found.append(f"{where}: state {step.get('state')!r}")
    if initial:
        if "stepId" in step:
            found.append(f"{where}: the initial step has a stepId")
        if step.get("stepType") != "Initial" or step.get("stepName") != "init":
            found.append(f"{where}: not the Initial step")
    elif not isinstance(step.get("stepId"), int):
        found.append(f"{where}: stepId {step.get('stepId')!r}")
    found += _headers(where + " headers", step.get("headers"))
    if step.get("retries", 0) > 0 and "retryDelay" not in step:
        found.append(f"{where}: retries without a retryDelay")
    return found


def _next_problems(where: str, step: Any) -> list[str]:
    if not isinstance(step, dict):
        return [f"{where}: not an object"]
    found = _keys(where, step, NEXT_KEYS)
    found += _types(
        where,
        step,
        {"messageId": str, "retries": int},
        optional={"stepName": str, "retryDelay": str, "errors": list, "nextDeliveryTime": int},
    )
    state = step.get("state")
    if state not in NEXT_STATES:
        found.append(f"{where}: state {state!r}")
    if state in ("STEP_RETRY", "STEP_FAILED") and not step.get("errors"):
        found.append(f"{where}: {state} without errors")
    for number, error in enumerate(step.get("errors") or []):
        found += _error_problems(f"{where} error {number}", error)
    return found


def _error_problems(where: str, error: Any) -> list[str]:
    if not isinstance(error, dict):
        return [f"{where}: not an object"]
    found = _keys(where, error, ERROR_KEYS)
    found += _types(where, error, {"error": str, "body": str, "status": int, "time": int})
    return found + _headers(where + " headers", error.get("headers"))


def _failure_problems(where: str, failure: dict[str, Any]) -> list[str]:
    found = _keys(where, failure, FAILURE_KEYS)
    found += _types(
        where,
        failure,
        {"messageId": str, "url": str, "failStatus": int, "failResponse": str, "dlqId": str},
        optional={"responseStatus": int, "responseBody": str, "maxRetries": int},
    )
    if failure.get("state") not in CALLBACK_STATES:
        found.append(f"{where}: state {failure.get('state')!r}")
    return found + _headers(where + " failHeaders", failure.get("failHeaders"))


def _keys(where: str, data: dict[str, Any], allowed: set[str]) -> list[str]:
    return [f"{where}: {key!r} is not a field Upstash sends" for key in sorted(set(data) - allowed)]


def _types(
    where: str,
    data: dict[str, Any],
    required: dict[str, type],
    optional: dict[str, type] | None = None,
) -> list[str]:
    found = [f"{where}: {key!r} missing" for key in required if key not in data]
    for key, kind in {**required, **(optional or {})}.items():
        value = data.get(key)
        if key in data and (
            not isinstance(value, kind) or isinstance(value, bool) != (kind is bool)
        ):
            found.append(f"{where}: {key!r} is {value!r:.60}, not {kind.__name__}")
    return found


def _headers(where: str, headers: Any) -> list[str]:
    if not isinstance(headers, dict):
        return [f"{where}: {headers!r:.60} is not an object"]
    return [
        f"{where}: {name!r} is not a list of strings"
        for name, values in headers.items()
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values)
    ]


def fake_qstash(answer: dict[str, Any]) -> Starlette:
    """A QStash whose logs API answers from a recorded answer (filtered by run id)."""

    async def logs(request: Request) -> JSONResponse:
        wanted = request.query_params.get("workflowRunId")
        runs = [run for run in answer["runs"] if wanted in (None, run["workflowRunId"])]
        return JSONResponse({**answer, "runs": runs})

    return Starlette(routes=[Route("/v2/workflows/logs", logs, methods=["GET"])])
