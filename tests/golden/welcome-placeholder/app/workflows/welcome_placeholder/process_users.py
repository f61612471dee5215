"""Layer 1, `process-users`: statistics, dry runs, then Layer 2.

Beside it, the operations routes: dry-run statistics and the pass start.
"""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import APIRouter, Depends, HTTPException
from qstash.errors import QStashError
from upstash_workflow import AsyncWorkflowContext

from app.workflows import _runtime

from . import RETRIES, WORKFLOW_NAME, flow_control
from .payloads import (
    DryRunResult,
    ProcessUsersPayload,
    StartedPass,
    StartRequest,
    Statistics,
)
from .workflow import (
    WORKFLOW_PATHS,
    WelcomePlaceholderWorkflow,
    statistics,
)

log = _runtime.WorkflowLog(WORKFLOW_NAME, "process")

Payload = ProcessUsersPayload | _runtime.InvalidPayload


async def process_users(context: AsyncWorkflowContext[Payload]) -> None:
    """Statistics first; a dry run or an empty backlog ends the run there."""
    request = context.request_payload
    if isinstance(request, _runtime.InvalidPayload):
        await _runtime.reject_payload(context, log, request)
        return
    force = request.force

    async def _count_and_filter() -> dict[str, Any]:
        counts = await statistics(force=force)
        log.info("Check result", force=force, **counts.wire())
        return counts.wire()

    counts = Statistics.model_validate(
        await context.run(f"{WORKFLOW_NAME}:count-and-filter", _count_and_filter)
    )
    if request.dry_run:
        log.info(
            f"[DryRun] Would process {counts.to_process} users",
            **counts.wire(),
        )
        return
    if counts.to_process == 0:
        log.info(
            "All users already processed",
            **counts.wire(),
        )
        return
    root_run_id = context.workflow_run_id

    async def _trigger_paginate() -> dict[str, str]:
        run_id = await WelcomePlaceholderWorkflow.trigger_page(
            None,
            force=force,
            root_run_id=root_run_id,
        )
        log.info("Triggered pagination", toProcess=counts.to_process, runId=run_id)
        return {"runId": run_id}

    await context.run(f"{WORKFLOW_NAME}:trigger-paginate", _trigger_paginate)


async def dry_run(force: bool = False) -> DryRunResult:
    """Dry-run statistics: the counts the `count-and-filter` step computes; starts nothing."""
    return await WelcomePlaceholderWorkflow.dry_run(force=force)


async def start_pass(request: StartRequest | None = None) -> StartedPass:
    """Start one pass: a Layer-1 run under a new run id (`lobeflow run` calls this)."""
    force = request is not None and request.force
    try:
        run_id = await WelcomePlaceholderWorkflow.start_pass(force=force)
    except _runtime.ConfigurationError as error:
        raise HTTPException(500, str(error)) from None
    except QStashError as error:
        raise HTTPException(502, f"QStash refused the run start: {error}") from None
    except httpx.HTTPError as error:
        detail = f"QStash is unreachable ({type(error).__name__}: {error})."
        raise HTTPException(502, detail) from None
    log.info("Started a pass", runId=run_id, force=force)
    return StartedPass(workflow_run_id=run_id)


def register(router: APIRouter) -> None:
    """Mount the Layer-1 workflow route and the operations routes: dry-run statistics and
    the pass start (open locally; in production only with the bearer token
    `_runtime.STATS_TOKEN_ENV`)."""
    guard = [Depends(_runtime.require_operations_token)]
    _runtime.serve_workflow(
        router,
        WORKFLOW_PATHS.process_users,
        process_users,
        parser=_runtime.payload_parser(ProcessUsersPayload),
        log=log,
        flow_control=flow_control.process(),
        retries=RETRIES,
    )
    for method in ("GET", "POST"):
        router.add_api_route(
            WORKFLOW_PATHS.stats,
            dry_run,
            methods=[method],
            dependencies=guard,
            response_model=DryRunResult,
            operation_id=f"{WORKFLOW_NAME}-dry-run-{method.lower()}",
            summary=f"Dry-run statistics of {WORKFLOW_NAME}",
        )
    router.add_api_route(
        WORKFLOW_PATHS.start,
        start_pass,
        methods=["POST"],
        dependencies=guard,
        response_model=StartedPass,
        operation_id=f"{WORKFLOW_NAME}-start",
        summary=f"Start a pass of {WORKFLOW_NAME}",
    )
