"""`POST /v2/trigger/{workflowUrl}`: start a workflow run from a plain REST call.

The engine does not know the endpoint's SDK, so it starts the run as if the SDK had sent its
own run-start message with the default feature set, and skips the unknown-SDK handshake.
"""

from __future__ import annotations

import secrets

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lobeflow.engine.api_common import engine_of, json_response, raw_destination, request_headers
from lobeflow.engine.core import normalize_url, now_ms
from lobeflow.engine.headers import lower_map

# What the TS SDK declares on its own run-start messages.
_FEATURES = "LazyFetch,InitialBody,WF_DetectTrigger"


async def trigger(request: Request) -> Response:
    """Start a run; answers `{"workflowRunId", "workflowCreatedAt"}`."""
    engine = engine_of(request)
    url = normalize_url(raw_destination(request, 3))
    headers = request_headers(request)
    lower = lower_map(headers)
    run_id = lower.get("upstash-workflow-runid") or "wfr_" + secrets.token_urlsafe(16)
    for name in ("upstash-workflow-runid", "upstash-workflow-init", "upstash-workflow-url"):
        headers = {key: value for key, value in headers.items() if key.lower() != name}
    headers.update(
        {
            "Upstash-Workflow-RunId": run_id,
            "Upstash-Workflow-Init": "true",
            "Upstash-Workflow-Url": url,
            "Upstash-Feature-Set": _FEATURES,
            # Forwarded, so the SDK sees a delivery from QStash rather than a new request.
            "Upstash-Forward-Upstash-Workflow-Sdk-Version": "1",
        }
    )
    await engine.publish(url, headers, await request.body())
    # Absent when `Upstash-Deduplication-Id` matched an earlier trigger.
    run = engine.runs_by_id.get(run_id)
    created_at = run.created_at if run is not None else now_ms()
    return json_response({"workflowRunId": run_id, "workflowCreatedAt": created_at})


ROUTES = [Route("/v2/trigger/{destination:path}", trigger, methods=["POST"])]
