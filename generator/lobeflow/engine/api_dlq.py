"""Dead-letter queue endpoints."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lobeflow.engine import errors
from lobeflow.engine.api_common import (
    engine_of,
    in_date_range,
    json_response,
    page,
    query_list,
    request_headers,
    requested_ids,
)
from lobeflow.engine.errors import ApiError

# Query parameter -> DLQ entry field, for the list/delete filters.
_FILTERS = {
    "messageId": "messageId",
    "url": "url",
    "queueName": "queueName",
    "topicName": "topicName",
    "scheduleId": "scheduleId",
    "label": "label",
    "workflowRunId": "workflowRunId",
    "workflowUrl": "workflowUrl",
    "workflowCreatedAt": "workflowCreatedAt",
    "flowControlKey": "flowControlKey",
    "responseStatus": "responseStatus",
    "callerIp": "callerIP",
    "failureFunctionState": "failureFunctionState",
}


def matches_filters(request: Request, entry: dict[str, Any]) -> bool:
    """Whether a DLQ entry passes the request's list/delete filters (fields and dates)."""
    for param, field in _FILTERS.items():
        wanted = query_list(request, param)  # several values (repeated or comma-separated): any
        if wanted and str(entry.get(field, "")) not in wanted:
            return False
    return in_date_range(request, int(entry.get("createdAt", 0)))


def _selected(request: Request, ids: list[str]) -> list[dict[str, Any]]:
    engine = engine_of(request)
    if ids:
        return [engine.dlq[i] for i in ids if i in engine.dlq]
    return [entry for entry in reversed(engine.dlq.values()) if matches_filters(request, entry)]


async def list_dlq(request: Request) -> Response:
    """`GET /v2/dlq`: `{"messages": [...], "cursor"}`, newest first."""
    entries = _selected(request, query_list(request, "dlqIds"))
    chunk, cursor = page(request, entries, 100)
    answer: dict[str, Any] = {"messages": chunk}
    if cursor:
        answer["cursor"] = cursor
    return json_response(answer)


async def get_dlq(request: Request) -> Response:
    """`GET /v2/dlq/{id}`."""
    dlq_id = request.path_params["dlq_id"]
    entry = engine_of(request).dlq.get(dlq_id)
    if entry is None:
        raise ApiError(404, errors.DLQ_NOT_FOUND.format(id=dlq_id))
    return json_response(entry)


async def delete_dlq(request: Request) -> Response:
    """`DELETE /v2/dlq/{id}`."""
    engine = engine_of(request)
    dlq_id = request.path_params["dlq_id"]
    if dlq_id not in engine.dlq:
        raise ApiError(404, errors.DLQ_NOT_FOUND.format(id=dlq_id))
    engine.delete_dlq(dlq_id)
    await engine.store.commit()
    return json_response({})


async def delete_many(request: Request) -> Response:
    """`DELETE /v2/dlq`: body `{"dlqIds": [...]}` (Python) or query ids/filters (TS)."""
    engine = engine_of(request)
    entries = _selected(request, await requested_ids(request, "dlqIds"))
    for entry in entries:
        engine.delete_dlq(entry["dlqId"])
    await engine.store.commit()
    return json_response({"deleted": len(entries)})


def _overrides(request: Request) -> dict[str, str]:
    """The request's publish headers, which replace the retried messages' own."""
    return {
        name: value
        for name, value in request_headers(request).items()
        if name.lower().startswith("upstash-") and not name.lower().startswith("upstash-telemetry-")
    }


async def retry(request: Request) -> Response:
    """`POST /v2/dlq/retry?dlqIds=...`: publish the messages again and drop the entries."""
    engine = engine_of(request)
    ids = await requested_ids(request, "dlqIds")
    overrides = _overrides(request)
    responses = []
    for entry in _selected(request, ids):
        message_id = engine.retry_dlq(entry["dlqId"], overrides)
        responses.append({"messageId": message_id})
    await engine.store.commit()
    return json_response({"responses": responses}, 201)


async def retry_one(request: Request) -> Response:
    """`POST /v2/dlq/retry/{dlqId}`: publish one message again; `{"messageId"}`."""
    engine = engine_of(request)
    dlq_id = request.path_params["dlq_id"]
    if dlq_id not in engine.dlq:
        raise ApiError(404, errors.DLQ_NOT_FOUND.format(id=dlq_id))
    message_id = engine.retry_dlq(dlq_id, _overrides(request))
    await engine.store.commit()
    return json_response({"messageId": message_id}, 201)


ROUTES = [
    Route("/v2/dlq", list_dlq, methods=["GET"]),
    Route("/v2/dlq", delete_many, methods=["DELETE"]),
    Route("/v2/dlq/retry", retry, methods=["POST"]),
    Route("/v2/dlq/retry/{dlq_id}", retry_one, methods=["POST"]),
    Route("/v2/dlq/{dlq_id}", get_dlq, methods=["GET"]),
    Route("/v2/dlq/{dlq_id}", delete_dlq, methods=["DELETE"]),
]
