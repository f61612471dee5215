"""Layer 2, `paginate-users`: pages, fan-out, Layer-3 triggers.

A run handles either one fan-out chunk (`userIds`)
or one page (`cursor`). A page run filters its ids, fans out when they exceed CHUNK_SIZE,
and starts the next page.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from lobeflow_runtime import WorkflowContext, WorkflowLog, serve_workflow

from . import CHUNK_SIZE, PAGE_SIZE, RETRIES, WORKFLOW_NAME, flow_control, logic
from .payloads import Page, PaginateUsersPayload
from .workflow import WORKFLOW_PATHS, WelcomePlaceholderWorkflow

log = WorkflowLog(WORKFLOW_NAME, "paginate")
# Short name: the trigger and filter methods carry the entity's name already.
Workflow = WelcomePlaceholderWorkflow


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[start : start + CHUNK_SIZE] for start in range(0, len(ids), CHUNK_SIZE)]


async def _trigger_generate(
    context: WorkflowContext[PaginateUsersPayload],
    user_ids: list[str],
    *,
    force: bool,
    root_run_id: str,
) -> None:
    """ONE step that starts the Layer-3 runs of these ids with one batch request."""

    async def _trigger() -> dict[str, int]:
        run_ids = await Workflow.trigger_generate_users(
            user_ids,
            force=force,
            root_run_id=root_run_id,
        )
        log.info("Triggered generate runs", count=len(run_ids))
        return {"triggered": len(run_ids)}

    # Named by the first and last id: unique within the run, and the same on every replay.
    first, last = user_ids[0], user_ids[-1]
    await context.run(f"{WORKFLOW_NAME}:trigger-generate:{first}-{last}", _trigger)


async def paginate_users(
    context: WorkflowContext[PaginateUsersPayload],
) -> None:
    """One fan-out chunk, or one page of users.

    A page run starts the next page too.
    """
    request = context.request_payload
    force = request.force
    root_run_id = request.root_run_id or context.workflow_run_id

    if request.user_ids:
        await _trigger_generate(
            context,
            list(request.user_ids),
            force=force,
            root_run_id=root_run_id,
        )
        return

    cursor = request.cursor

    async def _get_batch() -> dict[str, Any]:
        ids, next_cursor = await logic.list_page(cursor, PAGE_SIZE)
        log.info("Got batch", cursor=cursor, batchSize=len(ids), nextCursor=next_cursor)
        return Page(ids=ids, next_cursor=next_cursor).wire()

    page = Page.model_validate(await context.run(f"{WORKFLOW_NAME}:get-batch", _get_batch))

    async def _filter_existing() -> list[str]:
        if force:
            return page.ids
        ids = await Workflow.filter_users_needing_processing(
            page.ids,
        )
        log.info("After filtering", needProcessing=len(ids), skipped=len(page.ids) - len(ids))
        return ids

    user_ids: list[str] = []
    if page.ids:
        user_ids = await context.run(
            f"{WORKFLOW_NAME}:filter-existing",
            _filter_existing,
        )

    if len(user_ids) > CHUNK_SIZE:
        chunks = _chunks(user_ids)

        async def _fan_out() -> dict[str, int]:
            run_ids = await Workflow.fan_out(
                chunks,
                force=force,
                root_run_id=root_run_id,
            )
            log.info(
                "Fan-out mode",
                chunks=len(run_ids),
                chunkSize=CHUNK_SIZE,
                totalItems=len(user_ids),
            )
            return {"chunks": len(run_ids)}

        # 👉 One step and one batch request for all chunks (not one step per chunk).
        await context.run(f"{WORKFLOW_NAME}:fanout", _fan_out)
    elif user_ids:
        await _trigger_generate(
            context,
            user_ids,
            force=force,
            root_run_id=root_run_id,
        )

    next_cursor = page.next_cursor
    if next_cursor is None:
        log.info("No more pages", cursor=cursor)
        return

    async def _next_page() -> dict[str, str]:
        run_id = await Workflow.trigger_page(
            next_cursor,
            force=force,
            root_run_id=root_run_id,
        )
        log.info("Scheduled next page", nextCursor=next_cursor, runId=run_id)
        return {"runId": run_id}

    await context.run(f"{WORKFLOW_NAME}:next-page", _next_page)


def register(router: APIRouter) -> None:
    """Mount the Layer-2 workflow route."""
    serve_workflow(
        router,
        WORKFLOW_PATHS.paginate_users,
        paginate_users,
        payload=PaginateUsersPayload,
        log=log,
        flow_control=flow_control.paginate(),
        retries=RETRIES,
    )
