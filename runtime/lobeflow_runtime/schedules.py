"""Scheduled passes: the route a QStash schedule calls, which starts a pass unless one of the
workflow is still running.

`lobeflow schedules sync` keeps one QStash schedule per workflow that declares a SCHEDULE;
each firing POSTs `{}` to the workflow's scheduled-start route. That route:

1. checks the QStash signature (when a signing key is set), as every workflow route does;
2. names the pass after the firing's message: `wfr_<workflow>-process-scheduled-<message
   id>`, so QStash's retries of one firing start one pass at most;
3. asks QStash's workflow logs API (`GET /v2/workflows/logs`, which Upstash serves too)
   whether a run of the workflow is still running at one of its three route URLs (APP_URL +
   path, state `RUN_STARTED`). If one is, a pass is still going on: the route logs ONE line
   saying so and answers 200 without starting anything, so QStash does not retry and
   passes never overlap. The next firing tries again;
4. otherwise starts the pass with the app's own trigger (`start(run_id)`: its Layer-1 flow
   control and retries, as `lobeflow run` and the start route do) and answers its run id.

The check needs no state of the app's own, so it holds with several processes and
instances, on Upstash as on the local engine.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from lobeflow_runtime.logs import WorkflowLog
from lobeflow_runtime.operations import qstash_failures_as_http
from lobeflow_runtime.protocol import SCHEDULED_RUN, WORKFLOW_RUN_ID, run_id_prefix
from lobeflow_runtime.settings import workflow_url
from lobeflow_runtime.signatures import read_body, signature_check
from lobeflow_runtime.triggers import qstash_client, run_key

RUN_STARTED = "RUN_STARTED"
# A schedule's body is `{}`: nothing bigger is read.
MAX_SCHEDULED_BODY_BYTES = 64 * 1024

StartPass = Callable[[str], Awaitable[str]]


def scheduled_run_id(workflow: str, message_id: str) -> str:
    """The run id of the pass that the schedule message `message_id` starts:
    `wfr_<workflow>-process-scheduled-<message id, or its stable hash when it is long>`."""
    return f"{run_id_prefix(workflow, 'process')}{SCHEDULED_RUN}-{run_key(message_id)}"


async def _runs(params: dict[str, str]) -> list[dict[str, Any]]:
    """One page of the workflow logs API."""
    answer = await qstash_client().http.request(
        path="/v2/workflows/logs", method="GET", params=params
    )
    runs = answer.get("runs") if isinstance(answer, dict) else None
    return [run for run in runs or [] if isinstance(run, dict)]


async def running_run(urls: Sequence[str]) -> str | None:
    """The id of a run still running at one of `urls` (None: none runs).

    Raises:
        qstash.errors.QStashError, httpx.HTTPError: QStash refused or could not be reached.
    """
    pages = await asyncio.gather(
        *(_runs({"workflowUrl": url, "state": RUN_STARTED, "count": "1"}) for url in urls)
    )
    for runs in pages:
        for run in runs:
            run_id = run.get("workflowRunId")
            # Filtered by QStash already; checked again in case a QStash ignores the filter.
            if isinstance(run_id, str) and run.get("workflowState", RUN_STARTED) == RUN_STARTED:
                return run_id
    return None


async def _started_already(run_id: str) -> bool:
    """Whether QStash knows run `run_id` (an earlier delivery of the same firing started it)."""
    return any(
        run.get("workflowRunId") == run_id
        for run in await _runs({"workflowRunId": run_id, "count": "1"})
    )


def serve_schedule(
    router: APIRouter,
    *,
    workflow: str,
    path: str,
    layer_paths: Sequence[str],
    start: StartPass,
) -> None:
    """Mount `POST path`, the route a QStash schedule calls to start a pass of `workflow`.

    Args:
        router: Where the route goes.
        workflow: The workflow's name (run ids and `[workflow:process]` log lines).
        path: The route's path; QStash calls APP_URL + `path`.
        layer_paths: The workflow's three route paths: a run still running at one of them
            (at APP_URL) means a pass is still going on, and the firing starts nothing.
        start: Starts a pass under the run id it is given (never forced); returns it.
    """
    log = WorkflowLog(workflow, "process")
    check = signature_check(path, MAX_SCHEDULED_BODY_BYTES)

    async def scheduled_start(request: Request) -> JSONResponse:
        if check is not None:
            await check(request)
        else:
            await read_body(request, MAX_SCHEDULED_BODY_BYTES)
        message = request.headers.get("upstash-message-id") or uuid.uuid4().hex
        schedule = request.headers.get("upstash-schedule-id")
        run_id = scheduled_run_id(workflow, message)
        with qstash_failures_as_http("QStash refused"):
            urls = [workflow_url(layer) for layer in layer_paths]
            started, running = await asyncio.gather(_started_already(run_id), running_run(urls))
            if started:
                log.info("Scheduled pass already started", runId=run_id, scheduleId=schedule)
                return JSONResponse({WORKFLOW_RUN_ID: run_id})
            if running is not None:
                log.info(
                    "Scheduled pass skipped: a pass is still running",
                    running=running,
                    scheduleId=schedule,
                    messageId=message,
                )
                return JSONResponse({"skipped": True, "runningRunId": running})
            started_id = await start(run_id)
        log.info("Started a scheduled pass", runId=started_id, scheduleId=schedule)
        return JSONResponse({WORKFLOW_RUN_ID: started_id})

    router.add_api_route(
        path,
        scheduled_start,
        methods=["POST"],
        operation_id=f"{workflow}-scheduled-start",
        summary=f"Start a scheduled pass of {workflow} (QStash schedule deliveries only)",
    )
