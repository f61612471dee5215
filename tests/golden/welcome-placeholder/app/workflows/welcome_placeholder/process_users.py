"""Layer 1, `process-users`: statistics, dry runs, then Layer 2.

Beside it, the operations routes (dry-run statistics and the pass start) and the route a
QStash schedule calls to start a pass.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from lobeflow_runtime import (
    WorkflowContext,
    WorkflowLog,
    serve_operations,
    serve_schedule,
    serve_workflow,
)

from . import RETRIES, WORKFLOW_NAME, flow_control
from .payloads import (
    DryRunResult,
    ProcessUsersPayload,
    StartedPass,
    Statistics,
)
from .workflow import (
    WORKFLOW_PATHS,
    WelcomePlaceholderWorkflow,
    statistics,
)

log = WorkflowLog(WORKFLOW_NAME, "process")


async def process_users(
    context: WorkflowContext[ProcessUsersPayload],
) -> None:
    """Statistics first; a dry run or an empty backlog ends the run there."""
    request = context.request_payload
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


async def dry_run(force: bool) -> DryRunResult:
    """Dry-run statistics: the counts the `count-and-filter` step computes; starts nothing."""
    return await WelcomePlaceholderWorkflow.dry_run(force=force)


async def start_pass(force: bool) -> StartedPass:
    """Start one pass: a Layer-1 run under a new run id (`lobeflow run` calls this)."""
    run_id = await WelcomePlaceholderWorkflow.start_pass(force=force)
    log.info("Started a pass", runId=run_id, force=force)
    return StartedPass(workflow_run_id=run_id)


async def start_scheduled_pass(run_id: str) -> str:
    """Start the pass a QStash schedule asked for, under `run_id` (never forced)."""
    return await WelcomePlaceholderWorkflow.start_pass(run_id=run_id)


def register(router: APIRouter) -> None:
    """Mount the Layer-1 workflow route and the operations routes: dry-run statistics and
    the pass start (open locally; in production only with the bearer token
    LOBEFLOW_STATS_TOKEN), and the scheduled start (QStash deliveries only; it starts
    nothing while a pass of this workflow is still running)."""
    serve_workflow(
        router,
        WORKFLOW_PATHS.process_users,
        process_users,
        payload=ProcessUsersPayload,
        log=log,
        flow_control=flow_control.process(),
        retries=RETRIES,
    )
    serve_operations(
        router,
        workflow=WORKFLOW_NAME,
        stats_path=WORKFLOW_PATHS.stats,
        dry_run=dry_run,
        start_path=WORKFLOW_PATHS.start,
        start=start_pass,
    )
    serve_schedule(
        router,
        workflow=WORKFLOW_NAME,
        path=WORKFLOW_PATHS.scheduled_start,
        layer_paths=(
            WORKFLOW_PATHS.process_users,
            WORKFLOW_PATHS.paginate_users,
            WORKFLOW_PATHS.generate_user,
        ),
        start=start_scheduled_pass,
    )
