"""`POST /v2/trigger/{workflowUrl}`: start a workflow run from a plain REST call.

The engine does not know the endpoint's SDK, so it starts the run as if the SDK had sent its
own run-start message with the default feature set, and skips the unknown-SDK handshake.
"""

from __future__ import annotations

import secrets
from typing import Any

from lobeflow_runtime.protocol import RUN_ID_PREFIX, SDK_FEATURE_SET, SDK_PROTOCOL_VERSION
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lobeflow.engine import errors
from lobeflow.engine.api_common import (
    engine_of,
    json_body,
    json_response,
    raw_destination,
    request_headers,
)
from lobeflow.engine.core import Engine
from lobeflow.engine.errors import ApiError
from lobeflow.engine.headers import lower_map
from lobeflow.engine.message_building import normalize_url, now_ms


def _run_start(destination: str, headers: dict[str, str]) -> tuple[str, str, dict[str, str]]:
    """`(url, run id, run-start publish headers)` of a trigger request."""
    url = normalize_url(destination)
    lower = lower_map(headers)
    run_id = lower.get("upstash-workflow-runid") or RUN_ID_PREFIX + secrets.token_urlsafe(16)
    for name in ("upstash-workflow-runid", "upstash-workflow-init", "upstash-workflow-url"):
        headers = {key: value for key, value in headers.items() if key.lower() != name}
    headers.update(
        {
            "Upstash-Workflow-RunId": run_id,
            "Upstash-Workflow-Init": "true",
            "Upstash-Workflow-Url": url,
            "Upstash-Feature-Set": SDK_FEATURE_SET,
            # Forwarded, so the SDK sees a delivery from QStash rather than a new request.
            "Upstash-Forward-Upstash-Workflow-Sdk-Version": SDK_PROTOCOL_VERSION,
        }
    )
    return url, run_id, headers


def _started(engine: Engine, run_id: str, deduplicated: bool) -> dict[str, Any]:
    # The run is absent when `Upstash-Deduplication-Id` matched an earlier trigger.
    run = engine.runs_by_id.get(run_id)
    created_at = run.created_at if run is not None else now_ms()
    answer: dict[str, Any] = {"workflowRunId": run_id, "workflowCreatedAt": created_at}
    if deduplicated:
        answer["deduplicated"] = True
    return answer


async def trigger(request: Request) -> Response:
    """Start a run; answers `{"workflowRunId", "workflowCreatedAt"}`."""
    engine = engine_of(request)
    url, run_id, headers = _run_start(raw_destination(request, 3), request_headers(request))
    await engine.publish(url, headers, await request.body())
    return json_response(_started(engine, run_id, deduplicated=False))


async def batch_trigger(request: Request) -> Response:
    """`POST /v2/batch/trigger`: `[{destination, body?, headers?}]` -> 201
    `[{workflowRunId, workflowCreatedAt, deduplicated?}]`; a bad item starts no run."""
    engine = engine_of(request)
    items = await json_body(request)
    if not isinstance(items, list):
        raise ApiError(400, errors.INVALID_BATCH)
    starts: list[tuple[str, str, dict[str, str], bytes]] = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("destination"), str):
            raise ApiError(400, errors.MISSING_DESTINATION)
        raw_headers = item.get("headers") or {}
        if not isinstance(raw_headers, dict):
            raise ApiError(400, errors.INVALID_BATCH)
        body = item.get("body")
        url, run_id, headers = _run_start(
            item["destination"], {str(k): str(v) for k, v in raw_headers.items()}
        )
        engine.check_publish(url, headers, None)
        starts.append((url, run_id, headers, b"" if body is None else str(body).encode()))
    answers = []
    for url, run_id, headers, body in starts:
        _, deduplicated = engine.accept(url, headers, body)
        answers.append(_started(engine, run_id, deduplicated))
    await engine.store.commit()
    return json_response(answers, 201)


ROUTES = [
    Route("/v2/trigger/{destination:path}", trigger, methods=["POST"]),
    Route("/v2/batch/trigger", batch_trigger, methods=["POST"]),
]
