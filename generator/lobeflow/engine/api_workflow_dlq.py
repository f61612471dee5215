"""Workflow DLQ endpoints: list, get, restart, resume, the failure callback, delete.

A run that failed lands in the DLQ with the message whose delivery failed; these endpoints act
on such entries (the TS client lists them with `GET /v2/dlq?source=workflow`, in `api_dlq`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lobeflow.engine import errors
from lobeflow.engine.api_common import engine_of, int_param, json_response, page, query_list
from lobeflow.engine.api_dlq import matches_filters
from lobeflow.engine.core import Engine
from lobeflow.engine.errors import ApiError
from lobeflow.engine.model import Run

# Request headers that override the failed run's settings on restart/resume.
_OVERRIDES = {
    "upstash-flow-control-key": "Upstash-Flow-Control-Key",
    "upstash-flow-control-value": "Upstash-Flow-Control-Value",
    "upstash-retries": "Upstash-Retries",
    "upstash-retry-delay": "Upstash-Retry-Delay",
    "upstash-delay": "Upstash-Delay",
    "upstash-label": "Upstash-Label",
    "upstash-failure-callback": "Upstash-Failure-Callback",
}


def _select(request: Request, domain: list[str], strict: bool) -> tuple[list[str], bool]:
    """The DLQ ids a request targets, and whether more matching entries are left.

    Ids come from the path, from `dlqIds`, or else from the filters (first `count` matches;
    the processed entries leave the DLQ, so the next call simply starts over).

    Raises:
        ApiError: 404 when `strict` and an explicitly named id is not in `domain`.
    """
    if "dlq_id" in request.path_params:
        ids = [request.path_params["dlq_id"]]
    else:
        ids = query_list(request, "dlqIds")
    if ids:
        known = set(domain)
        missing = [dlq_id for dlq_id in ids if dlq_id not in known]
        if missing and (strict or "dlq_id" in request.path_params):
            raise ApiError(404, errors.DLQ_NOT_FOUND.format(id=missing[0]))
        return [dlq_id for dlq_id in dict.fromkeys(ids) if dlq_id in known], False
    engine = engine_of(request)
    matching = [dlq_id for dlq_id in domain if matches_filters(request, engine.dlq[dlq_id])]
    count = max(1, int_param(request, "count", 100))
    return matching[:count], len(matching) > count


def _overrides(request: Request) -> dict[str, str]:
    return {
        canonical: request.headers[name]
        for name, canonical in _OVERRIDES.items()
        if name in request.headers
    }


async def _rerun(
    request: Request, action_of: Callable[[Engine], Callable[[str, Mapping[str, str]], Run]]
) -> Response:
    engine = engine_of(request)
    action = action_of(engine)
    ids, more = _select(request, engine.workflow_dlq_ids(), strict=True)
    overrides = _overrides(request)
    runs = []
    for dlq_id in ids:
        run = action(dlq_id, overrides)
        runs.append({"workflowRunId": run.id, "workflowCreatedAt": run.created_at})
    await engine.store.commit()
    if "dlq_id" in request.path_params:
        return json_response(runs[0])  # the path form names one entry and answers one run
    answer: dict[str, Any] = {"workflowRuns": runs}
    if more:
        answer["cursor"] = "next"
    return json_response(answer)


async def restart(request: Request) -> Response:
    """`POST /v2/workflows/dlq/restart[/{dlqId}]`: start the failed runs over, new run ids."""
    return await _rerun(request, lambda engine: engine.restart_workflow_dlq)


async def resume(request: Request) -> Response:
    """`POST /v2/workflows/dlq/resume[/{dlqId}]`: continue from the failed step, new run ids."""
    return await _rerun(request, lambda engine: engine.resume_workflow_dlq)


async def callback(request: Request) -> Response:
    """`POST /v2/workflows/dlq/callback/{dlqId}`: publish the failure callback again."""
    engine = engine_of(request)
    run = engine.retry_workflow_failure_callback(request.path_params["dlq_id"])
    await engine.store.commit()
    return json_response({"workflowRunId": run.id, "workflowCreatedAt": run.created_at})


async def cancel_callback(request: Request) -> Response:
    """`DELETE /v2/workflows/dlq/callback/{dlqId}`: cancel an in-progress failure callback."""
    engine = engine_of(request)
    engine.cancel_workflow_failure_callback(request.path_params["dlq_id"])
    await engine.store.commit()
    return json_response({})


async def list_failed(request: Request) -> Response:
    """`GET /v2/workflows/dlq`: the entries of failed runs, newest first."""
    engine = engine_of(request)
    entries = [
        engine.dlq[dlq_id]
        for dlq_id in engine.workflow_dlq_ids()
        if matches_filters(request, engine.dlq[dlq_id])
    ]
    chunk, cursor = page(request, entries, 100)
    answer: dict[str, Any] = {"messages": chunk}
    if cursor:
        answer["cursor"] = cursor
    return json_response(answer)


async def get_failed(request: Request) -> Response:
    """`GET /v2/workflows/dlq/{dlqId}`: the entry of one failed run."""
    engine = engine_of(request)
    dlq_id = request.path_params["dlq_id"]
    if dlq_id not in engine.workflow_dlq_ids():
        raise ApiError(404, errors.DLQ_NOT_FOUND.format(id=dlq_id))
    return json_response(engine.dlq[dlq_id])


async def delete(request: Request) -> Response:
    """`DELETE /v2/workflows/dlq[/{dlqId}]`: `{"deleted": N}` (unknown ids in a list skipped)."""
    engine = engine_of(request)
    domain = [
        dlq_id for dlq_id, entry in reversed(engine.dlq.items()) if entry.get("workflowRunId")
    ]
    ids, more = _select(request, domain, strict=False)
    for dlq_id in ids:
        engine.delete_dlq(dlq_id)
    await engine.store.commit()
    answer: dict[str, Any] = {"deleted": len(ids)}
    if more:
        answer["cursor"] = "next"
    return json_response(answer)


ROUTES = [
    Route("/v2/workflows/dlq/restart", restart, methods=["POST"]),
    Route("/v2/workflows/dlq/restart/{dlq_id}", restart, methods=["POST"]),
    Route("/v2/workflows/dlq/resume", resume, methods=["POST"]),
    Route("/v2/workflows/dlq/resume/{dlq_id}", resume, methods=["POST"]),
    Route("/v2/workflows/dlq/callback/{dlq_id}", callback, methods=["POST"]),
    Route("/v2/workflows/dlq/callback/{dlq_id}", cancel_callback, methods=["DELETE"]),
    Route("/v2/workflows/dlq", list_failed, methods=["GET"]),
    Route("/v2/workflows/dlq", delete, methods=["DELETE"]),
    Route("/v2/workflows/dlq/{dlq_id}", get_failed, methods=["GET"]),
    Route("/v2/workflows/dlq/{dlq_id}", delete, methods=["DELETE"]),
]
