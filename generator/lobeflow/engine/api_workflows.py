"""Workflow run endpoints: end/cancel runs, raw steps, bulk cancel, run logs."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from itertools import islice
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lobeflow.engine import errors
from lobeflow.engine.api_common import (
    engine_of,
    in_date_range,
    int_param,
    json_body,
    json_response,
    parse_int,
    query_list,
    string_list,
)
from lobeflow.engine.errors import ApiError
from lobeflow.engine.model import RUN_STARTED, Run
from lobeflow.engine.run_changes import RunChanges
from lobeflow.engine.workflow import default_retry_delay, raw_steps, run_log


async def get_run(request: Request) -> Response:
    """`GET /v2/workflows/runs/{id}`: the raw step list; 404 once the run has ended."""
    engine = engine_of(request)
    run_id = request.path_params["run_id"]
    run = engine.runs_by_id.get(run_id)
    if run is None:
        raise ApiError(404, errors.RUN_NOT_FOUND.format(id=run_id))
    if run.state != RUN_STARTED:
        raise ApiError(404, errors.RUN_ENDED.format(id=run_id, state=run.state))
    return json_response(raw_steps(run))


async def delete_run(request: Request) -> Response:
    """`DELETE /v2/workflows/runs/{id}?cancel=false|true`; the body is the run's return value."""
    engine = engine_of(request)
    cancel = request.query_params.get("cancel", "false").lower() == "true"
    body = (await request.body()).decode("utf-8", "replace")
    engine.end_run(request.path_params["run_id"], cancel, body or None)
    await engine.store.commit()
    return json_response({})


def _run_matches(request: Request, run: Run, filters: dict[str, Any]) -> bool:
    ids = filters.get("workflowRunIds")
    if ids:
        return run.id in ids
    url = filters.get("workflowUrl")
    if url:
        exact = str(filters.get("workflowUrlExactMatch", "")).lower() == "true"
        if (run.url != url) if exact else not run.url.startswith(url):
            return False
    labels = filters.get("label")
    if labels and run.label not in labels:
        return False
    keys = filters.get("flowControlKey")
    if keys and run.flow_key not in keys:
        return False
    return in_date_range(request, run.created_at)


async def bulk_cancel(request: Request) -> Response:
    """`DELETE /v2/workflows/runs`: filters in the query (TS 1.x) or a JSON body (Go, TS 0.2)."""
    engine = engine_of(request)
    body = await json_body(request, default={})
    if not isinstance(body, dict):
        raise ApiError(400, errors.INVALID_JSON)
    filters: dict[str, Any] = {}
    # Checked before anything is cancelled: a wrong type must not widen the selection.
    for name in ("workflowRunIds", "label", "flowControlKey"):
        in_body = string_list(name, body.get(name))
        values = query_list(request, name) or in_body
        if values:
            filters[name] = values
    for name in ("workflowUrl", "workflowUrlExactMatch"):
        value = request.query_params.get(name, body.get(name))
        allowed = str | bool if name == "workflowUrlExactMatch" else str
        if value is not None and not isinstance(value, allowed):
            raise ApiError(400, errors.INVALID_FILTER.format(name=name))
        if value is not None:
            filters[name] = value
    body_count = body.get("count")
    count = int_param(request, "count", 0 if body_count is None else parse_int("count", body_count))
    targets = [
        run.id
        for run in engine.runs_by_id.values()
        if run.state == RUN_STARTED and _run_matches(request, run, filters)
    ]
    if count > 0:
        targets = targets[:count]
    cancelled = engine.cancel_runs(targets)
    await engine.store.commit()
    return json_response({"cancelled": cancelled})


async def run_logs(request: Request) -> Response:
    """`GET /v2/workflows/logs` (alias `/v2/workflows/events`): runs newest first.

    As Upstash: `cursor` only when another page follows. Engine-only, opt-in:
    `changedSince=<changeToken>` (`0`: from the start) keeps only runs whose log changed
    since the token (see `run_changes`), and only then does the answer carry a new
    `changeToken`.
    """
    engine = engine_of(request)
    changes: RunChanges = request.app.state.run_changes
    params = request.query_params
    since: int | None = None
    if "changedSince" in params:
        since = changes.parse(params["changedSince"])
        if since is None:
            raise ApiError(400, errors.INVALID_CHANGE_TOKEN.format(token=params["changedSince"]))
    run_id = params.get("workflowRunId")
    url = params.get("workflowUrl")
    state = params.get("state")
    created_at = params.get("workflowCreatedAt")
    labels = query_list(request, "label")
    keys = query_list(request, "flowControlKey")
    from_date, to_date = int_param(request, "fromDate", 0), int_param(request, "toDate", 0)
    if run_id:
        candidates: Iterable[Run] = (
            [engine.runs_by_id[run_id]] if run_id in engine.runs_by_id else []
        )
    else:
        candidates = reversed(engine.runs_by_id.values())
    matching = (
        run
        for run in candidates
        if (not url or run.url == url)
        and (not state or run.state == state)
        and (not created_at or str(run.created_at) == created_at)
        and (not labels or run.label in labels)
        and (not keys or run.flow_key in keys)
        and (not from_date or run.created_at >= from_date)
        and (not to_date or run.created_at <= to_date)
    )
    if since is not None:
        threshold = since
        matching = (run for run in matching if changes.observe(run, engine.messages) > threshold)
    # Stop at the first run past the page: a poll for the newest runs scans few of them.
    start = max(0, int_param(request, "cursor", 0))
    count = max(1, int_param(request, "count", 10))
    window = list(islice(matching, min(start + count + 1, sys.maxsize)))
    chunk = window[start : start + count]
    default_delay = default_retry_delay(engine.config.max_retry_delay)
    logs = []
    for run in chunk:
        pending = [engine.messages[m] for m in run.pending if m in engine.messages]
        logs.append(run_log(run, pending, default_delay))
        if since is None:  # a `changedSince` scan has just recorded it
            changes.observe(run, engine.messages)
    changes.forget_missing(engine.runs_by_id)
    answer: dict[str, Any] = {"runs": logs}
    if len(window) > start + count:
        answer["cursor"] = str(start + count)
    if since is not None:
        answer["changeToken"] = changes.token
    return json_response(answer)


ROUTES = [
    Route("/v2/workflows/runs/{run_id}", get_run, methods=["GET"]),
    Route("/v2/workflows/runs/{run_id}", delete_run, methods=["DELETE"]),
    Route("/v2/workflows/runs", bulk_cancel, methods=["DELETE"]),
    Route("/v2/workflows/logs", run_logs, methods=["GET"]),
    Route("/v2/workflows/events", run_logs, methods=["GET"]),
]
