"""Layer 3, `generate-user`: the work for ONE item per run.

Three steps (get, generate, save), each retried by QStash on its own. Errors are not
caught: they fail the delivery, QStash retries it, and `on_failure` records what is left.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from lobeflow_runtime import (
    RunFailure,
    WorkflowContext,
    WorkflowLog,
    mark_item_skipped,
    serve_workflow,
)

from . import RETRIES, WORKFLOW_NAME, flow_control, logic
from .payloads import GenerateUserPayload
from .workflow import WORKFLOW_PATHS

log = WorkflowLog(WORKFLOW_NAME, "generate")


async def generate_user(
    context: WorkflowContext[GenerateUserPayload],
) -> None:
    """Load, generate and save ONE user."""
    request = context.request_payload
    user_id = request.user_id
    force = request.force
    run_id = context.workflow_run_id

    async def _get() -> dict[str, Any] | None:
        # 👉 A duplicate run for a done item (e.g. after the dedup window) ends here.
        done = not force and not await logic.filter_needing_processing(
            [user_id],
        )
        if done:
            log.info(
                "Already processed; skipping",
                userId=user_id,
            )
            return None
        item = await logic.load(user_id)
        if item is None:
            log.info(
                "Not found; skipping",
                userId=user_id,
            )
        return item

    item: dict[str, Any] | None = await context.run(
        f"{WORKFLOW_NAME}:get-user",
        _get,
    )
    if item is None:
        # Counted as skipped, not processed, in the `lobeflow.items` metric.
        mark_item_skipped()
        return

    async def _generate() -> dict[str, Any]:
        log.info(
            "Starting",
            userId=user_id,
            runId=run_id,
        )
        return await logic.process(item)

    result: dict[str, Any] = await context.run(
        f"{WORKFLOW_NAME}:generate-user",
        _generate,
    )

    async def _save() -> dict[str, bool]:
        saved = await logic.save(user_id, result, run_id=run_id)
        return {"saved": saved}

    await context.run(f"{WORKFLOW_NAME}:save-user", _save)
    log.info("Completed", userId=user_id)


async def on_failure(
    context: WorkflowContext[GenerateUserPayload],
    failure: RunFailure,
) -> None:
    """Called once a run has exhausted its retries (and been logged): record the failure."""
    await logic.record_failure(
        context.request_payload.user_id,
        f"{failure.status}: {failure.message}",
    )


def register(router: APIRouter) -> None:
    """Mount the Layer-3 workflow route."""
    serve_workflow(
        router,
        WORKFLOW_PATHS.generate_user,
        generate_user,
        payload=GenerateUserPayload,
        log=log,
        flow_control=flow_control.execute(),
        retries=RETRIES,
        on_failure=on_failure,
        # One item per run: its id goes on spans and log lines, its run counts as an item.
        item_id=lambda payload: payload.user_id,
    )
